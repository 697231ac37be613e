"""The 16-bit residual stream (``AccelConfig.residual16``, I-ViT's int16 stream, issue 23 item 5).

The ISA: ADD and LAYERNORM with ``wide`` read (ADD: and write) int16 tensors stored as the int8
tensors of their little-endian bytes; on builds without the feature the bit is ignored. A
tiny-digits model quantized with ``--residual-bits 16`` compiled for a residual16 build runs on the
ISA simulator equal to the golden forward (whole logit vectors and every kept activation); a build
without the feature refuses it in one line naming the feature and the config.
Every comparison is of whole tensors, with the seed and the first mismatch in the message.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.cli import main
from vitaccel.config import AccelConfig, ConfigError, preset
from vitaccel.isa import Opcode
from vitaccel.run import simulate_model
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model, model_features
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.forward import quantize_input, patches, trace
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.recipes import hardware_gap
from vitaccel.sw.zoo import model_images
from vitaccel import testing

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with I-LayerNorm, the int16 stream and two vector lanes (a row of cols = 4 bytes holds two
#: int16 values: one beat of two int16 lanes).
R16 = dataclasses.replace(preset("tiny"), name="tiny-r16", layernorm="i_layernorm", vector_lanes=2,
                          residual16=True).validate()
#: the same build without the feature.
NO_R16 = dataclasses.replace(R16, name="tiny-ilnorm", residual16=False).validate()


@pytest.fixture(scope="module")
def r16(tmp_path_factory):
    path = tmp_path_factory.mktemp("r16") / "tiny-digits-r16.npz"
    quantize_model("tiny-digits", layernorm="i_layernorm", residual_bits=16, output=path)
    return path


def first_mismatch(got, expected, what):
    return testing.first_mismatch(got, expected, what, SEED)


def test_knob_keeps_slugs_and_checks_its_needs():
    assert dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378" and preset("tiny").slug == "tiny-5f034ecd5d"
    assert "residual16" not in preset("default").to_dict() and "residual16" not in NO_R16.to_dict()
    assert R16.to_dict()["residual16"] is True and "residual16" in R16.features
    assert AccelConfig.from_dict(R16.to_dict()) == R16
    with pytest.raises(ConfigError, match="residual16 needs layernorm"):
        dataclasses.replace(preset("tiny"), residual16=True).validate()          # ailayernorm
    with pytest.raises(ConfigError, match="cols a multiple of 2 \\* vector_lanes"):
        dataclasses.replace(R16, vector_lanes=4).validate()                      # 4 % 8


def test_r16_runs_on_the_isa_simulator(r16):
    """Logits of 3 images and every kept activation equal the golden forward (the stream's tensors
    read as int16 from their bytes); the program's ADDs and LAYERNORMs carry ``wide``."""
    intvit = IntViT.load(r16)
    assert model_features(intvit)["residual16"] == "x0, the model's 16-bit residual stream"
    assert hardware_gap(intvit) and hardware_gap(intvit, R16) is None
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, R16, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    program = compile_model(intvit, R16, keep_intermediates=True)
    ops = [(w & 0xFF, (w >> 8) & 0xFF) for w in program.instructions]
    wide = 1 << 6       # VectorInstr.wide: bit 14 of the word (bit 6 of its second byte)
    assert (Opcode.ADD.value, wide) in ops and (Opcode.LAYERNORM.value, wide) in ops
    assert (Opcode.ADD.value, 0) not in ops and (Opcode.LAYERNORM.value, 0) not in ops
    tr = trace(intvit, images[:2])
    tokens = patches(quantize_input(intvit, images[:2]), intvit.config.patch_size)
    stream = ("x0", "blocks.0.add1", "blocks.0.add2", "blocks.1.add1", "blocks.1.add2")
    names = [n for n, s in program.symbols.items() if s.role == "output" and n in tr]
    assert {"x0", "blocks.0.norm1", "blocks.0.add2", "norm", "logits"} <= set(names)
    for i, t in enumerate(tokens):
        result = isasim.run(program.with_tensors(input=t))
        assert result.ok, result.error
        for name in names:
            got = program.read_tensor(result.image, name)
            if name in stream:
                got = np.ascontiguousarray(got.astype(np.int8)).view("<i2")
            expected = tr[name][i:i + 1] if name == "logits" else tr[name][i][:got.shape[0]]
            assert not first_mismatch(got, expected, f"image {i} {name}"), first_mismatch(got, expected, f"image {i} {name}")


def test_r16_is_refused_without_the_feature(r16, tmp_path, capsys):
    intvit = IntViT.load(r16)
    with pytest.raises(CompileError) as info:
        compile_model(intvit, NO_R16, name="r16")
    message = str(info.value)
    assert message.startswith("r16 needs feature residual16 (a 16-bit residual stream")
    assert "which config 'tiny-ilnorm' lacks (residual16=False; the feature needs residual16=True)" in message
    assert "\n" not in message
    config = tmp_path / "tiny-ilnorm.toml"
    NO_R16.save(config)
    assert main(["simulate", "--model", str(r16), "--config", str(config), "--engine", "isa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("vitaccel: error: vit needs feature residual16") and "config 'tiny-ilnorm' lacks" in last


@pytest.mark.slow
def test_r16_bit_exact_in_rtl_with_cycles_of_the_perf_model(tmp_path, capsys, recipe_runs_in_rtl):
    """The commands of the issue: vitaccel quantize --layernorm i_layernorm --residual-bits 16, then
    vitaccel simulate --engine rtl on a tiny build with residual16: 3 images bit-exact (whole logit
    vectors), every run's Verilator cycles equal to the performance model's."""
    recipe_runs_in_rtl(tmp_path, capsys, R16, "base", "--layernorm", "i_layernorm", "--residual-bits", "16",
                       seed=SEED)


def random_r16_program(cfg, rng, name="random-r16", out_of_range=False):
    """A random program on ``cfg`` (residual16): SPAD LOADs of random bytes, wide and int8 ADDs and
    LAYERNORMs (rows 1..4, in place or not) with their parameters in PARAM; then SPAD STOREd.
    ``out_of_range``: one wide ADD whose int16 tensors end past the scratchpad, though their int8
    view would fit (LOCAL_RANGE, as the ISA simulator says)."""
    from vitaccel.isa import LocalMemory, encode, encode_program
    from vitaccel.numerics import row_mean_constants
    from vitaccel.sw import layernorm as ln
    from vitaccel.sw.program import Program

    spad_b, acc_b = cfg.spad_row_bytes, cfg.acc_row_bytes
    data, spad_used = 4096, 64
    add_params = [(21845, 5680, 15), (-300, 1200, 9), (1 << 14, 3, 14), (3, 20000, 18)]
    params = np.zeros((cfg.param_rows, cfg.cols), dtype="<i4")
    for p, values in enumerate(add_params):
        params[p, :3] = values
    ln_sets = {}                # (wide, length) -> param_addr
    at = len(add_params)
    for wide, length in ((1, 5), (0, 6), (1, 2)):
        lp = ln.layernorm_params(rng.normal(1, 0.3, length), rng.normal(0, 0.5, length), 3.0 / 127)
        packed = ln.pack_layernorm_params(cfg.cols, None, lp, length, "i_layernorm")
        if wide:
            packed[-1, :2] = row_mean_constants(length, 0, 15)
        params[at:at + len(packed)] = packed
        ln_sets[(wide, length)] = at
        at += len(packed)
    words = [encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=at, dram_addr=0, dram_stride=acc_b),
             encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=0, rows=spad_used, dram_addr=2048,
                    dram_stride=spad_b)]

    def span(length, rows, wide):
        return (-(-(2 * length if wide else length) // cfg.cols) - 1) * rows + rows

    for _ in range(int(rng.integers(20, 40))):
        kind = rng.choice(["load", "add", "add", "layernorm", "layernorm"])
        wide = int(rng.random() < 0.7)
        rows = int(rng.integers(1, 5))
        if kind == "load":
            n = int(rng.integers(1, 9))
            words.append(encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=int(rng.integers(0, spad_used - n)),
                                rows=n, dram_addr=int(rng.integers(64, 1000)) * spad_b // spad_b * spad_b,
                                dram_stride=spad_b))
        elif kind == "add":
            length = int(rng.integers(1, 14))
            # a (and an in-place output) below 32, b from 32, other outputs from spad_used: no
            # overlap but exactly in place.
            a = int(rng.integers(0, 32 - span(length, rows, wide) + 1))
            b = int(rng.integers(32, spad_used - span(length, rows, 0) + 1))
            dst = a if rng.random() < 0.5 else int(rng.integers(spad_used, cfg.spad_rows - span(length, rows, wide)))
            words.append(encode(Opcode.ADD, src=a, src2=b, dst=dst, rows=rows, length=length, tile_stride=rows,
                                param_addr=int(rng.integers(0, len(add_params))), wide=wide))
        else:
            length = 6 if not wide else int(rng.choice([5, 2]))
            src = int(rng.integers(0, spad_used - span(length, rows, wide) + 1))
            dst = src if rng.random() < 0.5 else int(rng.integers(spad_used, cfg.spad_rows - span(length, rows, 0)))
            words.append(encode(Opcode.LAYERNORM, src=src, dst=dst, rows=rows, length=length, tile_stride=rows,
                                param_addr=ln_sets[(wide, length)], wide=wide))
    if out_of_range:
        # 6 int16 elements on 4 columns: 3 tiles (int8 view: 2), stride 4, 2 rows: rows base..base+9.
        base = cfg.spad_rows - 9
        words.append(encode(Opcode.ADD, src=base, src2=0, dst=base, rows=2, length=6, tile_stride=4,
                            param_addr=0, wide=1))
    words.append(encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=0, rows=cfg.spad_rows, dram_addr=data,
                        dram_stride=spad_b))
    words.append(encode(Opcode.END))
    prog_addr = data + cfg.spad_rows * spad_b
    image = bytearray(params.tobytes())
    image += bytes(2048 - len(image))
    image += rng.integers(0, 256, data - 2048, dtype=np.uint8).tobytes()
    image += bytes(prog_addr - data)
    image += encode_program(words)
    return Program(cfg, words, bytes(image), prog_addr=prog_addr, name=name)


def test_random_r16_programs_on_the_isa_simulator():
    """The generator's programs run on the ISA simulator (fast: what the slow RTL test compares)."""
    for case in range(3):
        result = isasim.run(random_r16_program(R16, np.random.default_rng(SEED * 1000 + case)))
        assert result.ok, f"seed {SEED * 1000 + case}: {result.error}"
    bad = isasim.run(random_r16_program(R16, np.random.default_rng(SEED), out_of_range=True))
    assert bad.error.name == "LOCAL_RANGE"


@pytest.mark.slow
@pytest.mark.parametrize("case", range(3))
def test_random_r16_programs_rtl_equals_isa(case, rtl_equals_isa):
    """Random wide and int8 ADD/LAYERNORM programs through the whole core in Verilator: the final
    image equals the ISA simulator's, CYCLES the performance model's."""
    seed = SEED * 1000 + case
    rtl_equals_isa(R16, random_r16_program(R16, np.random.default_rng(seed)), seed)


@pytest.mark.slow
def test_wide_out_of_range_is_refused_by_the_core():
    """A wide ADD whose int16 tensors end past the scratchpad (their int8 view would fit): the core
    stops with LOCAL_RANGE, as the ISA simulator."""
    from vitaccel.sim.verilator import run_image

    program = random_r16_program(R16, np.random.default_rng(SEED), out_of_range=True)
    want = isasim.run(program)
    got = run_image(R16, program.image, program.prog_addr)
    assert want.error.name == "LOCAL_RANGE" and got.error.name == "LOCAL_RANGE", (want.error, got.error)

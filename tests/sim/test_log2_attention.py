"""Log2 attention (``AccelConfig.log2_attention``, FQ-ViT's Log-Int-Softmax, issue 23 item 1).

The ISA: a log2 SOFTMAX writes ``s = 15 - k`` for FQ-ViT's 4-bit codes ``k``; a MATMUL with
``log2_a`` reads each input byte as ``0`` (``s == 0``) or ``2**(s - 1)``; on builds without the
feature both bits are ignored. The fqvit recipe of tiny-digits compiled for a log2 build runs on
the ISA simulator equal to the golden forward, whole logit vectors and every kept activation; a
build without the feature refuses it in one line naming the feature and the config.
Every comparison is of whole tensors, with the seed and the first mismatch in the message.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.cli import main
from vitaccel.config import AccelConfig, preset
from vitaccel.isa import Opcode, encode, encode_program
from vitaccel.run import simulate_model
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model, model_features
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.forward import patches, quantize_input, trace
from vitaccel.sw.golden import matmul
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.softmax import (log2_operand, log2_spad_codes, log_attention_matmul, log_int_softmax,
                                 softmax_params)
from vitaccel.sw.zoo import model_images
from vitaccel import testing

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with the log2 softmax output and the array's log2 input decoder.
LOG2 = dataclasses.replace(preset("tiny"), name="tiny-log2", log2_attention=True).validate()


@pytest.fixture(scope="module")
def fqvit(tmp_path_factory):
    path = tmp_path_factory.mktemp("fqvit") / "tiny-digits-fqvit.npz"
    quantize_model("tiny-digits", recipe="fqvit", config=LOG2, output=path)
    return path


def first_mismatch(got, expected, what):
    return testing.first_mismatch(got, expected, what, SEED)


def test_knob_keeps_slugs_and_names_the_feature():
    assert dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378" and preset("tiny").slug == "tiny-5f034ecd5d"
    assert "log2_attention" not in preset("default").to_dict()
    assert LOG2.to_dict()["log2_attention"] is True and "log2-attention" in LOG2.features
    assert "log2-attention" not in preset("default").features
    assert AccelConfig.from_dict(LOG2.to_dict()) == LOG2
    # The array's operand and partial sums widen only on the log2 build (2**14 * -128 = -2**21).
    assert (preset("tiny").psum_width, LOG2.psum_width) == (18, 24)


def _vector_program(cfg, x, v, log2: bool):
    """SOFTMAX (log2 or not) of the rows ``x`` (M, L <= cols) in SPAD, then MATMUL of the result
    with ``v`` (L rows padded to cfg.rows) with ``log2_a``; ACC rows STOREd after the program."""
    m, length = x.shape
    c = cfg.cols
    spad = np.zeros((m + cfg.rows, c), dtype=np.int8)
    spad[:m, :length] = x
    spad[m:m + v.shape[0]] = v
    param = np.zeros((1, c), dtype=np.int32)
    param[0, :2] = softmax_params(0.05)
    words = [
        encode(Opcode.LOAD, mem=0, local_addr=0, rows=spad.shape[0], dram_addr=0x1000, dram_stride=c),
        encode(Opcode.LOAD, mem=2, local_addr=0, rows=1, dram_addr=0x2000, dram_stride=4 * c),
        encode(Opcode.SOFTMAX, src=0, src2=1, dst=0, rows=m, length=length, tile_stride=m, param_addr=0,
               log2=int(log2)),
        encode(Opcode.MATMUL, a_addr=0, b_addr=m, c_addr=0, rows=m, log2_a=int(log2)),
        encode(Opcode.STORE, mem=1, local_addr=0, rows=m, dram_addr=0x3000, dram_stride=4 * c),
        encode(Opcode.STORE, mem=0, local_addr=0, rows=m, dram_addr=0x4000, dram_stride=c),
        encode(Opcode.END),
    ]
    image = bytearray(0x5000)
    code = encode_program(words)
    image[:len(code)] = code
    image[0x1000:0x1000 + spad.size] = spad.tobytes()
    image[0x2000:0x2000 + param.nbytes] = param.astype("<i4").tobytes()
    result = isasim.run(bytes(image), cfg, 0)
    assert result.ok and result.instret == len(words), result.error
    img = np.frombuffer(result.image, dtype=np.uint8)
    acc = img[0x3000:0x3000 + m * 4 * c].view("<i4").reshape(m, c)
    out = img[0x4000:0x4000 + m * c].view(np.int8).reshape(m, c)
    return acc, out, param[0, :2]


@pytest.mark.parametrize("cfg_name", ["tiny", "default"])
def test_isa_log2_softmax_and_matmul_equal_the_golden_shift_add(cfg_name):
    """Random logits: SOFTMAX log2 writes 15 - k (0 past length), MATMUL log2_a sums v << (14 - k),
    the accumulator of softmax.log_attention_matmul before its requantization."""
    cfg = dataclasses.replace(preset(cfg_name), log2_attention=True).validate()
    rng = np.random.default_rng(SEED)
    m, length = 5, cfg.cols - 1
    x = rng.integers(-128, 128, (m, length)).astype(np.int8)
    x[0] = 7                                    # a flat row: every code equal
    v = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
    acc, out, (mult, shift) = _vector_program(cfg, x, v, True)
    p = log_int_softmax(x.astype(np.int64), int(mult), int(shift), 4)
    codes = np.zeros((m, cfg.cols), dtype=np.int8)
    codes[:, :length] = log2_spad_codes(p)
    assert not first_mismatch(out, codes, "SPAD codes"), first_mismatch(out, codes, "SPAD codes")
    weight = np.where(p.k == p.zero, 0, 1 << (14 - np.minimum(p.k.astype(np.int64), 14)))
    expected = weight @ v[:length].astype(np.int64)
    assert not first_mismatch(acc, expected, "accumulator"), first_mismatch(acc, expected, "accumulator")
    # The golden attention x V is this accumulator requantized with the shift raised by 14.
    from vitaccel.sw.golden import requantize
    assert np.array_equal(log_attention_matmul(p, v[:length], 3, 5), requantize(expected, 0, 3, 5 + 14))


def test_isa_flags_are_ignored_without_the_feature():
    cfg = preset("tiny")
    rng = np.random.default_rng(SEED)
    x = rng.integers(-128, 128, (3, 3)).astype(np.int8)
    v = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
    assert all(np.array_equal(a, b) for a, b in zip(_vector_program(cfg, x, v, True), _vector_program(cfg, x, v, False)))


def test_log2_operand_decodes_every_byte():
    s = np.arange(-128, 128).astype(np.int8)
    low = s.astype(np.int64) & 15
    assert np.array_equal(log2_operand(s), np.where(low == 0, 0, 2 ** np.maximum(low - 1, 0)))
    assert log2_operand(np.int8(15)) == 1 << 14


def test_fqvit_runs_on_the_isa_simulator(fqvit):
    """Logits of 3 images and every kept activation (the attention outputs included) equal the
    golden forward; the program uses log2 SOFTMAX and log2_a MATMULs, no row exponents."""
    intvit = IntViT.load(fqvit)
    assert model_features(intvit)["log2-attention"] == "blocks.0.attn, recipe fqvit's 4-bit log2 softmax"
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, LOG2, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    program = compile_model(intvit, LOG2, keep_intermediates=True)
    ops = [(w & 0xFF, (w >> 8) & 0xFF) for w in program.instructions]
    assert (Opcode.SOFTMAX.value, 1) in ops and (Opcode.MATMUL.value, 4) in ops    # log2, log2_a (bit 10)
    tr = trace(intvit, images[:2])
    tokens = patches(quantize_input(intvit, images[:2]), intvit.config.patch_size)
    cfg, c = intvit.config, LOG2.cols
    dhp = -(-cfg.head_dim // c) * c
    names = [n for n, s in program.symbols.items() if s.role == "output" and n in tr]
    assert {"blocks.0.attn.out", "blocks.1.attn.out", "logits"} <= set(names)
    for i, t in enumerate(tokens):
        result = isasim.run(program.with_tensors(input=t))
        assert result.ok, result.error
        for name in names:
            got = program.read_tensor(result.image, name)
            if name.endswith(("qkv", "attn.out")):
                got = got.reshape(got.shape[0], -1, dhp)[:, :, :cfg.head_dim].reshape(got.shape[0], -1)
            expected = tr[name][i:i + 1] if name == "logits" else tr[name][i][:got.shape[0]]
            assert not first_mismatch(got, expected, f"image {i} {name}"), first_mismatch(got, expected, f"image {i} {name}")


def test_fqvit_is_refused_without_the_feature(fqvit, tmp_path, capsys):
    intvit = IntViT.load(fqvit)
    cfg = preset("tiny")
    with pytest.raises(CompileError) as info:
        compile_model(intvit, cfg, name="fqvit")
    message = str(info.value)
    assert message.startswith("fqvit needs feature log2-attention (4-bit log2 softmax output")
    assert "which config 'tiny' lacks (log2_attention=False; the feature needs log2_attention=True)" in message
    assert "\n" not in message
    assert main(["simulate", "--model", str(fqvit), "--config", "tiny", "--engine", "isa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]      # after the progress lines, one line
    assert last.startswith("vitaccel: error: vit needs feature log2-attention") and "config 'tiny' lacks" in last


@pytest.mark.slow
def test_fqvit_bit_exact_in_rtl_with_cycles_of_the_perf_model(tmp_path, capsys, recipe_runs_in_rtl):
    """The commands of the issue: vitaccel quantize --recipe fqvit, then vitaccel simulate --engine
    rtl on a tiny build with log2_attention: 3 images bit-exact (whole logit vectors), every run's
    Verilator cycles equal to the performance model's."""
    recipe_runs_in_rtl(tmp_path, capsys, LOG2, "fqvit", seed=SEED)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(4))
def test_random_log2_programs_rtl_equals_isa(case, feature_program, rtl_equals_isa):
    """Random programs with log2 and int8 MATMULs and SOFTMAXes mixed through the whole core in
    Verilator: the final image equals the ISA simulator's, CYCLES the performance model's."""
    seed = SEED * 1000 + case
    rng = np.random.default_rng(seed)
    program = feature_program(LOG2, rng, matmul_flags=lambda r: dict(log2_a=int(r.random() < 0.5)),
                              softmax_flags=lambda r: dict(log2=int(r.random() < 0.6)), name="random-log2")
    rtl_equals_isa(LOG2, program, seed)

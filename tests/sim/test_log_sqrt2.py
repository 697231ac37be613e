"""RepQ-ViT's log-sqrt2 attention (``AccelConfig.log_sqrt2_attention``, issue 23).

The ISA: a SOFTMAX with ``log2`` and ``twin_m`` 4 or 5 writes RepQ-ViT's log-sqrt2 codes
``log_sqrt2_softmax(x, mult, shift, twin_m, offset).k`` as ``31 - k`` (0 for ``p = 0``, the offset
from the parameter row); a MATMUL with ``log2_a`` and ``twin_m`` 4 or 5 reads each input byte as
``LSQ2_OPERAND[31 - s]`` (``2**(16 - k/2)``); on builds without the feature ``twin_m`` is ignored
there. The repq recipe of tiny-digits compiled for such a build runs on the ISA simulator equal to
the golden forward (whole logit vectors, every kept activation); a build without the feature
refuses it in one line naming the feature and the config. Every comparison is of whole tensors,
with the seed and the first mismatch in the message.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.cli import main
from vitaccel.config import AccelConfig, preset
from vitaccel.isa import Opcode, decode_fields, encode, encode_program
from vitaccel.run import simulate_model
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model, model_features
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.forward import patches, quantize_input, trace
from vitaccel.sw.golden import requantize
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.program import Program
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.recipes import hardware_gap
from vitaccel.sw.softmax import (LSQ2_OPERAND, log_attention_matmul, log_sqrt2_operand, log_sqrt2_softmax,
                                 softmax_params)
from vitaccel.sw.zoo import model_images
from vitaccel import testing

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with RepQ-ViT's log-sqrt2 codes and the array's 2**(-k/2) decode (repq needs I-LayerNorm).
LSQ2 = dataclasses.replace(preset("tiny"), name="tiny-lsq2", layernorm="i_layernorm",
                           log_sqrt2_attention=True).validate()
#: ... with activations below 8 bits (repq at A4 and A6).
LSQ2_A4 = dataclasses.replace(LSQ2, name="tiny-lsq2-narrow", narrow_activations=True).validate()


@pytest.fixture(scope="module")
def repq(tmp_path_factory):
    path = tmp_path_factory.mktemp("repq") / "tiny-digits-repq.npz"
    quantize_model("tiny-digits", recipe="repq", config=LSQ2, output=path)
    return path


def first_mismatch(got, expected, what):
    return testing.first_mismatch(got, expected, what, SEED)


def test_knob_keeps_slugs_and_names_the_feature():
    assert dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378" and preset("tiny").slug == "tiny-5f034ecd5d"
    assert "log_sqrt2_attention" not in preset("default").to_dict()
    assert LSQ2.to_dict()["log_sqrt2_attention"] is True and "log-sqrt2-attention" in LSQ2.features
    assert "log-sqrt2-attention" not in preset("default").features
    assert AccelConfig.from_dict(LSQ2.to_dict()) == LSQ2
    # 18-bit operands (2**16), products of data_width + 16 bits (-2**23 <= 2**16 * w < 2**23).
    assert (LSQ2.operand_width, LSQ2.product_width, LSQ2.psum_width) == (18, 24, 26)
    assert int(LSQ2_OPERAND.max()) == 1 << 16 and (1 << 16) * 128 <= 2 ** 23


def _program(cfg, x, v, bits, offset, *, sqrt2=True, log2=1):
    """SOFTMAX (log-sqrt2 of ``bits`` with ``offset`` when ``sqrt2``) of the rows ``x`` (M, L <= cols)
    in SPAD, then MATMUL of the result with ``v`` (log2_a with the same twin_m). ACC rows and the
    SOFTMAX output STOREd after the program."""
    n, length = x.shape
    c = cfg.cols
    spad = np.zeros((n + cfg.rows, c), dtype=np.int8)
    spad[:n, :length] = x
    spad[n:] = v
    param = np.zeros((1, c), dtype=np.int32)
    param[0, :3] = *softmax_params(0.05), offset
    m = bits if sqrt2 else 0
    words = [
        encode(Opcode.LOAD, mem=0, local_addr=0, rows=spad.shape[0], dram_addr=0x1000, dram_stride=c),
        encode(Opcode.LOAD, mem=2, local_addr=0, rows=1, dram_addr=0x2000, dram_stride=4 * c),
        encode(Opcode.SOFTMAX, src=0, src2=1, dst=0, rows=n, length=length, tile_stride=n, param_addr=0,
               log2=log2, twin_m=m),
        encode(Opcode.MATMUL, a_addr=0, b_addr=n, c_addr=0, rows=n, log2_a=log2, twin_m=m),
        encode(Opcode.STORE, mem=1, local_addr=0, rows=n, dram_addr=0x3000, dram_stride=4 * c),
        encode(Opcode.STORE, mem=0, local_addr=0, rows=n, dram_addr=0x4000, dram_stride=c),
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
    acc = img[0x3000:0x3000 + n * 4 * c].view("<i4").reshape(n, c)
    out = img[0x4000:0x4000 + n * c].view(np.int8).reshape(n, c)
    return acc, out, param[0, :2]


@pytest.mark.parametrize("cfg_name", ["tiny", "default"])
@pytest.mark.parametrize("bits,offset", [(5, 0), (5, -700), (4, 0), (4, -2048)])
def test_isa_log_sqrt2_softmax_and_matmul_equal_the_golden(cfg_name, bits, offset):
    """Random logits: SOFTMAX writes 31 - k of log_sqrt2_softmax's codes (0 for p = 0 and past
    length), MATMUL log2_a reads them as LSQ2_OPERAND[k]: log_attention_matmul's accumulator."""
    cfg = dataclasses.replace(preset(cfg_name), log_sqrt2_attention=True).validate()
    rng = np.random.default_rng(SEED + bits - offset)
    n, length = 6, cfg.cols - 1
    x = rng.integers(-128, 128, (n, length)).astype(np.int8)
    x[0] = 7                                    # a flat row
    x[1] = -128
    x[1, 0] = 127                               # a peaked row: k = 0 and zero codes
    v = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
    v[0, 0] = -128
    acc, out, (mult, shift) = _program(cfg, x, v, bits, offset)
    p = log_sqrt2_softmax(x.astype(np.int64), int(mult), int(shift), bits, offset)
    codes = np.zeros((n, cfg.cols), dtype=np.int8)
    codes[:, :length] = np.where(p.k == p.zero, 0, 31 - p.k.astype(np.int64))
    assert not first_mismatch(out, codes, "SPAD codes"), first_mismatch(out, codes, "SPAD codes")
    assert (p.k == 0).any() and (p.k == p.zero).any(), "the largest and the zero code must occur"
    kk = p.k.astype(np.int64)
    w = np.where(kk == p.zero, 0, LSQ2_OPERAND[np.minimum(kk, 30)])
    expected = w @ v[:length].astype(np.int64)
    assert not first_mismatch(acc, expected, "accumulator"), first_mismatch(acc, expected, "accumulator")
    # The golden attention x V is this accumulator requantized with the shift raised by 16.
    assert np.array_equal(log_attention_matmul(p, v[:length], 3, 5), requantize(expected, 0, 3, 5 + 16))


def test_isa_flags_are_ignored_without_the_feature():
    """tiny: twin_m with log2/log2_a is ignored (as log2 is: mantissas, int8 operands); a log2 build
    without the feature reads them as FQ-ViT's log2 codes."""
    rng = np.random.default_rng(SEED)
    x = rng.integers(-128, 128, (3, 3)).astype(np.int8)
    for cfg in (preset("tiny"), dataclasses.replace(preset("tiny"), log2_attention=True).validate()):
        v = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
        a, b = _program(cfg, x, v, 5, -100), _program(cfg, x, v, 5, -100, sqrt2=False)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("op,field", [(Opcode.MATMUL, "log2_a"), (Opcode.SOFTMAX, "log2")])
def test_other_widths_are_an_isa_error(op, field):
    common = dict(a_addr=0, b_addr=0, c_addr=0) if op is Opcode.MATMUL else dict(length=1, tile_stride=1)
    words = [encode(op, rows=1, **common, **{field: 1, "twin_m": 3}), encode(Opcode.END)]
    image = bytearray(0x1000)
    code = encode_program(words)
    image[:len(code)] = code
    with pytest.raises(isasim.IsaSimError, match=f"twin_m=3 with {field} at pc=0x0: log-sqrt2 codes are 4 or 5 bits"):
        isasim.run(bytes(image), LSQ2, 0)


def test_offset_outside_the_domain_is_an_isa_error():
    rng = np.random.default_rng(SEED)
    x = rng.integers(-128, 128, (2, 3)).astype(np.int8)
    v = rng.integers(-128, 128, (LSQ2.rows, LSQ2.cols)).astype(np.int8)
    with pytest.raises(isasim.IsaSimError, match=r"offset 1 \(param\[0\]\[2\]\) outside -2048..0"):
        _program(LSQ2, x, v, 5, 1)


def test_operand_decodes_every_byte():
    b = np.arange(-128, 128).astype(np.int8)
    s = b.astype(np.int64) & 31
    expected = np.where(s == 0, 0, LSQ2_OPERAND[(31 - s) % 31])
    assert np.array_equal(log_sqrt2_operand(b), expected)
    assert log_sqrt2_operand(np.int8(31)) == 1 << 16 and log_sqrt2_operand(np.int8(1)) == 2


def test_encoding_of_the_mode():
    w = encode(Opcode.MATMUL, a_addr=1, b_addr=2, c_addr=3, rows=4, log2_a=1, twin_m=5)
    _, f = decode_fields(w)
    assert (f["twin_a"], f["log2_a"], f["twin_m"]) == (0, 1, 5)
    _, f = decode_fields(encode(Opcode.SOFTMAX, src=0, src2=0, dst=0, rows=1, length=1, tile_stride=1,
                                param_addr=0, log2=1, twin_m=4))
    assert (f["twin"], f["twin_m"], f["log2"]) == (0, 4, 1)


def test_repq_runs_on_the_isa_simulator(repq):
    """Logits of 3 images and every kept activation (the attention outputs included) equal the
    golden forward; the program uses log-sqrt2 SOFTMAXes (5-bit codes at A8) and MATMULs, no row
    exponents."""
    intvit = IntViT.load(repq)
    assert model_features(intvit)["log-sqrt2-attention"].startswith("blocks.0.attn, recipe repq's log-sqrt2")
    assert hardware_gap(intvit) and hardware_gap(intvit, LSQ2) is None
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, LSQ2, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    program = compile_model(intvit, LSQ2, keep_intermediates=True)
    fields = [decode_fields(w) for w in program.instructions]
    assert any(op == Opcode.SOFTMAX and f["log2"] and f["twin_m"] == 5 for op, f in fields)
    assert any(op == Opcode.MATMUL and f["log2_a"] and f["twin_m"] == 5 and not f["twin_a"] for op, f in fields)
    assert not any(op == Opcode.REQUANT and f["row_shift"] for op, f in fields)
    tr = trace(intvit, images[:2])
    tokens = patches(quantize_input(intvit, images[:2]), intvit.config.patch_size)
    cfg, c = intvit.config, LSQ2.cols
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


def test_repq_a4_runs_on_the_isa_simulator(tmp_path):
    """W8A4: 4-bit log-sqrt2 codes (softmax_bits), on a build with narrow_activations too: 2 images
    bit-exact, the program's SOFTMAXes and attention x V MATMULs with twin_m 4."""
    path = tmp_path / "repq-a4.npz"
    quantize_model("tiny-digits", recipe="repq", config=LSQ2_A4, output=path, abits=4)
    intvit = IntViT.load(path)
    images, labels = model_images(intvit, 2)
    report = simulate_model(intvit, LSQ2_A4, images, labels, engine="isa", seed=SEED)
    assert report["bit_exact"], f"seed {SEED}: {[r for r in report['runs'] if not r['bit_exact']][:1]}"
    fields = [decode_fields(w) for w in compile_model(intvit, LSQ2_A4).instructions]
    assert any(op == Opcode.SOFTMAX and f["log2"] and f["twin_m"] == 4 for op, f in fields)
    assert not any(op in (Opcode.SOFTMAX, Opcode.MATMUL) and f["twin_m"] == 5 for op, f in fields)


def test_repq_is_refused_without_the_feature(repq, capsys):
    intvit = IntViT.load(repq)
    plain = dataclasses.replace(LSQ2, name="tiny-iln", log_sqrt2_attention=False).validate()
    with pytest.raises(CompileError) as info:
        compile_model(intvit, plain, name="repq")
    message = str(info.value)
    assert message.startswith("repq needs feature log-sqrt2-attention (RepQ-ViT log-sqrt2")
    assert ("which config 'tiny-iln' lacks (log_sqrt2_attention=False; the feature needs "
            "log_sqrt2_attention=True)") in message
    assert "\n" not in message
    config = repq.parent / "tiny-iln.toml"
    plain.save(config)
    assert main(["simulate", "--model", str(repq), "--config", str(config), "--engine", "isa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("vitaccel: error: vit needs feature log-sqrt2-attention") and "'tiny-iln' lacks" in last


@pytest.mark.slow
def test_repq_bit_exact_in_rtl_with_cycles_of_the_perf_model(tmp_path, capsys, recipe_runs_in_rtl):
    """The commands of the issue: vitaccel quantize --recipe repq, then vitaccel simulate --engine
    rtl on a tiny build with log_sqrt2_attention: 3 images bit-exact (whole logit vectors), every
    run's Verilator cycles equal to the performance model's."""
    recipe_runs_in_rtl(tmp_path, capsys, LSQ2, "repq", seed=SEED)


@pytest.mark.slow
def test_repq_w4a8_bit_exact_in_rtl(tmp_path, capsys, recipe_runs_in_rtl):
    """W4A8 (5-bit codes, 4-bit weights): 2 images bit-exact in Verilator, cycles == perf."""
    recipe_runs_in_rtl(tmp_path, capsys, LSQ2, "repq", "--wbits", "4", images=2, seed=SEED)


@pytest.mark.slow
def test_repq_w8a4_bit_exact_in_rtl(tmp_path, capsys, recipe_runs_in_rtl):
    """W8A4 (4-bit codes) on a build with narrow_activations too: 2 images bit-exact, cycles == perf."""
    recipe_runs_in_rtl(tmp_path, capsys, LSQ2_A4, "repq", "--abits", "4", images=2, seed=SEED)


def _with_offset(program: Program, rng) -> Program:
    # The random programs' SOFTMAX parameter row is PARAM row 4 (image bytes 0..): a random offset.
    image = bytearray(program.image)
    at = (4 * LSQ2.cols + 2) * 4
    image[at:at + 4] = int(-rng.integers(0, 2049)).to_bytes(4, "little", signed=True)
    return dataclasses.replace(program, image=bytes(image))


@pytest.mark.slow
@pytest.mark.parametrize("case", range(4))
def test_random_log_sqrt2_programs_rtl_equals_isa(case, feature_program, rtl_equals_isa):
    """Random programs with log-sqrt2 (4- and 5-bit) and int8 MATMULs and SOFTMAXes mixed through
    the whole core in Verilator: the final image equals the ISA simulator's, CYCLES the
    performance model's."""
    seed = SEED * 1000 + case
    rng = np.random.default_rng(seed)
    program = feature_program(
        LSQ2, rng, name="random-lsq2",
        matmul_flags=lambda r: dict(log2_a=int(r.random() < 0.6), twin_m=int(r.choice([0, 4, 5]))),
        softmax_flags=lambda r: dict(log2=int(r.random() < 0.6), twin_m=int(r.choice([0, 4, 5]))))
    rtl_equals_isa(LSQ2, _with_offset(program, rng), seed)

"""Twin-uniform outputs (``AccelConfig.twin_uniform``, PTQ4ViT, issue 23 item 2).

The ISA: a twin SOFTMAX writes ``twin_softmax(x, mult, shift, twin_m).codes`` (bit 7 the range
flag); a MATMUL with ``twin_a`` reads each input byte as ``(c & 127) << (flag * m)`` (twin
probability codes) or, with ``log2_a`` too, as ``c << m`` for ``c >= 0`` else ``c`` (twin GELU
codes); on builds without the feature the bits are ignored. The ptq4vit recipe of tiny-digits
compiled for a twin build runs on the ISA simulator equal to the golden forward, whole logit vectors
and every kept activation; a build without the feature refuses it in one line naming the feature
and the config; a model whose ``m`` exceeds ``TWIN_M_MAX`` is refused in one line naming the layer.
Every comparison is of whole tensors, with the seed and the first mismatch in the message.
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
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.recipes import hardware_gap
from vitaccel.sw.softmax import softmax_params, twin_attention_matmul, twin_operand, twin_softmax
from vitaccel.sw.zoo import model_images
from vitaccel import testing

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with twin-uniform softmax output and the array's twin operand decode.
TWIN = dataclasses.replace(preset("tiny"), name="tiny-twin", twin_uniform=True).validate()


@pytest.fixture(scope="module")
def ptq4vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("ptq4vit") / "tiny-digits-ptq4vit.npz"
    quantize_model("tiny-digits", recipe="ptq4vit", config=TWIN, output=path)
    return path


def first_mismatch(got, expected, what):
    return testing.first_mismatch(got, expected, what, SEED)


def test_knob_keeps_slugs_and_names_the_feature():
    assert dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378" and preset("tiny").slug == "tiny-5f034ecd5d"
    assert "twin_uniform" not in preset("default").to_dict()
    assert TWIN.to_dict()["twin_uniform"] is True and "twin-uniform" in TWIN.features
    assert "twin-uniform" not in preset("default").features
    assert AccelConfig.from_dict(TWIN.to_dict()) == TWIN
    # 18-bit operands (127 << 10), products of data_width + 17 bits (|127 << 10| * 128 < 2**24).
    assert (TWIN.operand_width, TWIN.product_width, TWIN.psum_width) == (18, 25, 27)
    assert (preset("tiny").operand_width, preset("tiny").psum_width) == (8, 18)


def _program(cfg, x, v, m, *, twin=True, gelu_v=None):
    """SOFTMAX (twin or not, ``m``) of the rows ``x`` (M, L <= cols) in SPAD, MATMUL of the result
    with ``v`` (twin_a); with ``gelu_v``: a second MATMUL of the raw bytes ``x`` as twin GELU codes
    with ``gelu_v``. ACC rows and the SOFTMAX output STOREd after the program."""
    n, length = x.shape
    c = cfg.cols
    spad = np.zeros((2 * n + 2 * cfg.rows, c), dtype=np.int8)
    spad[:n, :length] = x
    spad[n:2 * n, :length] = x                                  # a copy for the GELU MATMUL
    spad[2 * n:2 * n + cfg.rows] = v
    if gelu_v is not None:
        spad[2 * n + cfg.rows:] = gelu_v
    param = np.zeros((1, c), dtype=np.int32)
    param[0, :2] = softmax_params(0.05)
    t = int(twin)
    words = [
        encode(Opcode.LOAD, mem=0, local_addr=0, rows=spad.shape[0], dram_addr=0x1000, dram_stride=c),
        encode(Opcode.LOAD, mem=2, local_addr=0, rows=1, dram_addr=0x2000, dram_stride=4 * c),
        encode(Opcode.SOFTMAX, src=0, src2=1, dst=0, rows=n, length=length, tile_stride=n, param_addr=0,
               twin=t, twin_m=m * t),
        encode(Opcode.MATMUL, a_addr=0, b_addr=2 * n, c_addr=0, rows=n, twin_a=t, twin_m=m * t),
        encode(Opcode.MATMUL, a_addr=n, b_addr=2 * n + cfg.rows, c_addr=n, rows=n, twin_a=t, log2_a=t,
               twin_m=m * t),
        encode(Opcode.STORE, mem=1, local_addr=0, rows=2 * n, dram_addr=0x3000, dram_stride=4 * c),
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
    acc = img[0x3000:0x3000 + 2 * n * 4 * c].view("<i4").reshape(2 * n, c)
    out = img[0x4000:0x4000 + n * c].view(np.int8).reshape(n, c)
    return acc[:n], acc[n:], out, param[0, :2]


@pytest.mark.parametrize("cfg_name", ["tiny", "default"])
@pytest.mark.parametrize("m", [0, 3, 10])
def test_isa_twin_softmax_and_matmuls_equal_the_golden(cfg_name, m):
    """Random logits: SOFTMAX twin writes twin_softmax's codes (0 past length), MATMUL twin_a sums
    (c & 127) << (flag * m) times v, the accumulator of twin_attention_matmul; the GELU mode reads
    int8 codes c as c << m (c >= 0) or c, fc2's accumulator in forward._twin_linear."""
    cfg = dataclasses.replace(preset(cfg_name), twin_uniform=True).validate()
    rng = np.random.default_rng(SEED + m)
    n, length = 5, cfg.cols - 1
    x = rng.integers(-128, 128, (n, length)).astype(np.int8)
    x[0] = 7                                    # a flat row: every code equal
    x[1, 0] = 127                               # a peaked row: an R2 code
    v = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
    gv = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
    v[0, 0], gv[0, 0] = -128, -128
    acc, gacc, out, (mult, shift) = _program(cfg, x, v, m, gelu_v=gv)
    p = twin_softmax(x.astype(np.int64), int(mult), int(shift), m)
    codes = np.zeros((n, cfg.cols), dtype=np.int8)
    codes[:, :length] = p.codes.view(np.int8)
    assert not first_mismatch(out, codes, "SPAD codes"), first_mismatch(out, codes, "SPAD codes")
    assert m == 0 or ((p.codes >> 7).any() and not (p.codes >> 7).all()), "both ranges must occur"
    c = p.codes.astype(np.int64)
    expected = ((c & 127) << ((c >> 7) * m)) @ v[:length].astype(np.int64)
    assert not first_mismatch(acc, expected, "accumulator"), first_mismatch(acc, expected, "accumulator")
    # The golden attention x V is this accumulator requantized with the shift raised by 7 + m.
    assert np.array_equal(twin_attention_matmul(p, v[:length], 3, 5), requantize(expected, 0, 3, 5 + 7 + m))
    g = x.astype(np.int64)
    gexpected = np.where(g >= 0, g << m, g) @ gv[:length].astype(np.int64)
    assert not first_mismatch(gacc, gexpected, "GELU accumulator"), first_mismatch(gacc, gexpected, "GELU accumulator")


def test_isa_flags_are_ignored_without_the_feature():
    cfg = preset("tiny")
    rng = np.random.default_rng(SEED)
    x = rng.integers(-128, 128, (3, 3)).astype(np.int8)
    v = rng.integers(-128, 128, (cfg.rows, cfg.cols)).astype(np.int8)
    a, b = _program(cfg, x, v, 5, gelu_v=v), _program(cfg, x, v, 5, twin=False, gelu_v=v)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_twin_m_above_the_limit_is_an_isa_error():
    words = [encode(Opcode.MATMUL, a_addr=0, b_addr=0, c_addr=0, rows=1, twin_a=1, twin_m=11), encode(Opcode.END)]
    image = bytearray(0x1000)
    code = encode_program(words)
    image[:len(code)] = code
    with pytest.raises(isasim.IsaSimError, match="twin_m=11 at pc=0x0 exceeds the twin-uniform range shift limit 10"):
        isasim.run(bytes(image), TWIN, 0)


def test_twin_operand_decodes_every_byte():
    b = np.arange(-128, 128).astype(np.int8)
    u = b.astype(np.int64) & 255
    for m in (0, 4, 10):
        assert np.array_equal(twin_operand(b, m), np.where(u >> 7, (u & 127) << m, u & 127))
        assert np.array_equal(twin_operand(b, m, gelu=True), np.where(b >= 0, b.astype(np.int64) << m, b))
    assert twin_operand(np.int8(-1), 10) == 127 << 10 and twin_operand(np.int8(127), 10, gelu=True) == 127 << 10
    assert (127 << AccelConfig.TWIN_M_MAX) < 2 ** 17          # an 18-bit signed multiplier input


def test_encoding_of_the_new_fields():
    w = encode(Opcode.MATMUL, a_addr=1, b_addr=2, c_addr=3, rows=4, twin_a=1, log2_a=1, twin_m=9)
    _, f = decode_fields(w)
    assert (f["twin_a"], f["log2_a"], f["twin_m"]) == (1, 1, 9)
    assert (w >> 8) & 0xFF == (1 << 2) | (1 << 3) | (9 << 4)
    _, f = decode_fields(encode(Opcode.SOFTMAX, src=0, src2=0, dst=0, rows=1, length=1, tile_stride=1,
                             param_addr=0, twin=1, twin_m=10))
    assert (f["twin"], f["twin_m"], f["log2"]) == (1, 10, 0)


def test_ptq4vit_runs_on_the_isa_simulator(ptq4vit):
    """Logits of 3 images and every kept activation (the attention outputs and fc2 included) equal
    the golden forward; the program uses twin SOFTMAXes and twin_a MATMULs, no row exponents."""
    intvit = IntViT.load(ptq4vit)
    assert model_features(intvit)["twin-uniform"].startswith("blocks.0.attn, recipe ptq4vit's twin-uniform")
    assert hardware_gap(intvit) and hardware_gap(intvit, TWIN) is None
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, TWIN, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    program = compile_model(intvit, TWIN, keep_intermediates=True)
    fields = [decode_fields(w) for w in program.instructions]
    assert any(op == Opcode.SOFTMAX and f["twin"] for op, f in fields)
    assert any(op == Opcode.MATMUL and f["twin_a"] and not f["log2_a"] for op, f in fields)
    assert any(op == Opcode.MATMUL and f["twin_a"] and f["log2_a"] for op, f in fields)   # fc2
    assert not any(op == Opcode.REQUANT and f["row_shift"] for op, f in fields)
    tr = trace(intvit, images[:2])
    tokens = patches(quantize_input(intvit, images[:2]), intvit.config.patch_size)
    cfg, c = intvit.config, TWIN.cols
    dhp = -(-cfg.head_dim // c) * c
    names = [n for n, s in program.symbols.items() if s.role == "output" and n in tr]
    assert {"blocks.0.attn.out", "blocks.1.attn.out", "blocks.0.fc2", "logits"} <= set(names)
    for i, t in enumerate(tokens):
        result = isasim.run(program.with_tensors(input=t))
        assert result.ok, result.error
        for name in names:
            got = program.read_tensor(result.image, name)
            if name.endswith(("qkv", "attn.out")):
                got = got.reshape(got.shape[0], -1, dhp)[:, :, :cfg.head_dim].reshape(got.shape[0], -1)
            expected = tr[name][i:i + 1] if name == "logits" else tr[name][i][:got.shape[0]]
            assert not first_mismatch(got, expected, f"image {i} {name}"), first_mismatch(got, expected, f"image {i} {name}")


def test_ptq4vit_is_refused_without_the_feature(ptq4vit, capsys):
    intvit = IntViT.load(ptq4vit)
    with pytest.raises(CompileError) as info:
        compile_model(intvit, preset("tiny"), name="ptq4vit")
    message = str(info.value)
    assert message.startswith("ptq4vit needs feature twin-uniform (PTQ4ViT twin-uniform")
    assert "which config 'tiny' lacks (twin_uniform=False; the feature needs twin_uniform=True)" in message
    assert "\n" not in message
    assert main(["simulate", "--model", str(ptq4vit), "--config", "tiny", "--engine", "isa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("vitaccel: error: vit needs feature twin-uniform") and "config 'tiny' lacks" in last


def test_m_above_the_limit_is_refused_naming_the_layer(ptq4vit):
    intvit = IntViT.load(ptq4vit)
    intvit.extra["blocks.1.twin_m"] = np.array([3, 11, 2], dtype=np.int32)
    with pytest.raises(CompileError) as info:
        compile_model(intvit, TWIN, name="big-m")
    assert str(info.value) == ("big-m: blocks.1.attn head 1's twin-uniform softmax m=11 exceeds the hardware's "
                               "limit 10 (operands of 127 << m in 18 bits)")
    intvit.extra["blocks.1.twin_m"] = np.array([3, 2, 2], dtype=np.int32)
    intvit.extra["blocks.0.gelu_m"] = np.array([12], dtype=np.int32)
    with pytest.raises(CompileError, match=r"^big-m: blocks.0.fc2's twin-uniform GELU m=12 exceeds the hardware's limit 10"):
        compile_model(intvit, TWIN, name="big-m")



@pytest.mark.slow
def test_ptq4vit_bit_exact_in_rtl_with_cycles_of_the_perf_model(tmp_path, capsys, recipe_runs_in_rtl):
    """The commands of the issue: vitaccel quantize --recipe ptq4vit, then vitaccel simulate --engine
    rtl on a tiny build with twin_uniform: 3 images bit-exact (whole logit vectors), every run's
    Verilator cycles equal to the performance model's."""
    recipe_runs_in_rtl(tmp_path, capsys, TWIN, "ptq4vit", seed=SEED)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(4))
def test_random_twin_programs_rtl_equals_isa(case, feature_program, rtl_equals_isa):
    """Random programs with twin and int8 MATMULs and SOFTMAXes mixed through the whole core in
    Verilator: the final image equals the ISA simulator's, CYCLES the performance model's."""
    seed = SEED * 1000 + case
    rng = np.random.default_rng(seed)
    program = feature_program(
        TWIN, rng, name="random-twin",
        matmul_flags=lambda r: dict(twin_a=int(r.random() < 0.6), log2_a=int(r.random() < 0.5), twin_m=int(r.integers(0, 11))),
        softmax_flags=lambda r: dict(twin=int(r.random() < 0.6), twin_m=int(r.integers(0, 11))))
    rtl_equals_isa(TWIN, program, seed)

"""The analytic performance model against the Verilator core's CYCLES (linear layers, vector ops,
the whole tiny-digits model on tiny), its documented per-instruction formulas, and its report."""

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.hw.layernorm import layernorm_cycles
from vitaccel.hw.matmul import matmul_cycles
from vitaccel.hw.memories import READ_LATENCY
from vitaccel.hw.requant import requant_cycles
from vitaccel.isa import LocalMemory, Opcode, encode
from vitaccel.sim.verilator import build, run_image
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.compile_ops import compile_vector_op
from vitaccel.sw.compiler import compile_linear
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward, patches, quantize_input
from vitaccel.sw.perf import BOUNDS, estimate, instruction_cost
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import load_builtin

CFG = preset("tiny")


@pytest.fixture(scope="module")
def binary():
    return build(CFG)


@pytest.fixture(scope="module")
def digits():
    model = load_builtin("tiny-digits")
    return quantize(model, calibrate(model, digits_split("calib")[0][:16]))


def linear_program(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    return compile_linear(CFG, x, w, rng.integers(-999, 999, n), rng.integers(1, 999, n), np.full(n, 9))


@pytest.mark.parametrize("latency", [1, 3])
@pytest.mark.parametrize("shape", [(17, 36, 36), (16, 4, 36), (50, 72, 36), (197, 24, 12)])
def test_linear_layers_match_the_rtl(binary, shape, latency):
    program = linear_program(*shape)
    rtl = run_image(CFG, program.image, program.prog_addr, latency=(latency, latency))
    assert rtl.cycles == estimate(program, mem_latency=latency).cycles


@pytest.mark.parametrize("memory", ["ulx3s-sdram", "arty-ddr3"])
@pytest.mark.parametrize("shape", [(17, 36, 36), (50, 72, 36)])
def test_linear_layers_match_the_rtl_on_dram(binary, shape, memory):
    """On the DRAM profiles (latency, paced beats, turnaround, few bursts in flight) too."""
    program = linear_program(*shape)
    rtl = run_image(CFG, program.image, program.prog_addr, memory=memory)
    assert rtl.cycles == estimate(program, memory=memory).cycles


@pytest.mark.parametrize("memory", ["onchip", "ulx3s-sdram"])
def test_vector_ops_match_the_rtl(binary, memory):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (300, 37), dtype=np.int8)
    for op, params, kw in [("add", (3, 5, 2), {"x2": x[::-1].copy()}), ("softmax", (1000, 10), {}),
                           ("gelu", rng.integers(-128, 128, 256, dtype=np.int8), {})]:
        program = compile_vector_op(CFG, op, x, params, **kw)
        assert run_image(CFG, program.image, 0, memory=memory).cycles == estimate(program, memory=memory).cycles, op


@pytest.mark.parametrize("memory", ["onchip", "ulx3s-sdram", "arty-ddr3"])
def test_whole_model_on_the_rtl(binary, digits, memory):
    # The compiled tiny-digits model on the core: golden logits and exactly the estimated cycles.
    image = digits_split("test")[0][:1]
    program = compile_model(digits, CFG)
    program = program.with_tensors(input=patches(quantize_input(digits, image), 2)[0])
    rtl = run_image(CFG, program.image, 0, memory=memory)
    assert np.array_equal(program.read_tensor(rtl.image, "logits"), forward(digits, image))
    model = estimate(program, memory=memory)
    assert rtl.cycles == model.cycles
    assert (rtl.bytes_read, rtl.bytes_written) == (model.bytes_read, model.bytes_written)


def test_instruction_formulas():
    cfg = preset("default")       # 32-bit bus: 4 fetch reads; SPAD rows 3 words, ACC rows 12
    fetch = 4 + 2 + 3             # reads, latency 2, decode, check and decide; dispatch takes 2 more

    def cost(op, **fields):
        return instruction_cost(cfg, encode(op, **fields), mem_latency=2)

    load = cost(Opcode.LOAD, mem=LocalMemory.SPAD, rows=10, dram_stride=12)
    assert (load.control, load.engine) == (fetch + 2, 30 + 2 + 3)    # words, latency, LOAD_EXTRA
    # words, READ_LATENCY + 4, the B response's latency (1)
    assert cost(Opcode.STORE, mem=LocalMemory.ACC, rows=2).engine == 24 + READ_LATENCY + 4 + 1
    mm = cost(Opcode.MATMUL, rows=197, transpose_b=1)
    assert (mm.engine, mm.macs) == (matmul_cycles(cfg, 197), 197 * 144)
    assert cost(Opcode.REQUANT, rows=5, row_shift=1).engine == requant_cycles(cfg, 5, True)
    ln = cost(Opcode.LAYERNORM, rows=3, length=192, tile_stride=3)
    assert (ln.control, ln.engine) == (fetch + 2 + 16 + 1, layernorm_cycles(cfg, 3, 192))
    assert cost(Opcode.MATMUL, rows=0).cycles == fetch
    assert cost(Opcode.END).cycles == fetch + 1
    with pytest.raises(ValueError, match="illegal opcode 99"):
        instruction_cost(cfg, 99)


def test_report(digits):
    program = compile_model(digits, preset("default"))
    report = estimate(program)
    assert sum(layer.cycles for layer in report.layers) == report.cycles == sum(
        c.cycles for c in report.instructions)
    assert [layer.name for layer in report.layers] == [name for _, _, name in program.layers]
    qkv = next(layer for layer in report.layers if layer.name == "blocks.0.qkv")
    patch = next(layer for layer in report.layers if layer.name == "patch_embed")
    assert patch.bound == "memory"  # 16 patches: loading the weights outlasts the MATMULs
    # The MATMULs of 17 rows now follow each other without their drain (the array double-buffers
    # its weights), and qkv's weight-column LOADs are what the controller waits for most.
    assert qkv.bound == "memory" and qkv.by_class["compute"] > 0 and qkv.macs > 0 and 0 < qkv.utilization < 1
    assert next(layer for layer in report.layers if layer.name == "blocks.0.norm1").bound == "nonlinear"
    assert all(layer.bound in BOUNDS for layer in report.layers)
    attn = next(layer for layer in report.grouped() if layer.name == "blocks.0.attn")
    assert attn.cycles == sum(layer.cycles for layer in report.layers if layer.name.startswith("blocks.0.attn."))
    kinds = {layer.name: layer for layer in report.grouped(per_block=False)}
    assert kinds["qkv"].cycles == sum(layer.cycles for layer in report.layers if layer.name.endswith(".qkv"))
    table = report.table().splitlines()
    assert table[0].split()[:3] == ["layer", "instrs", "cycles"] and table[-1].startswith("total")
    assert report.seconds(100e6) == report.cycles / 100e6


def test_breakdown_adds_up(digits):
    report = estimate(compile_model(digits, preset("default")))
    shares = report.breakdown()
    assert list(shares)[:2] == ["mac floor", "matmul overhead"] and "MATMUL" not in shares
    assert abs(sum(shares.values()) - 1) < 1e-12 and all(v >= 0 for v in shares.values())
    assert shares["mac floor"] == report.macs / (report.cycles * report.config.macs)

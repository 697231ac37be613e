"""Packed 4-bit weights (issue 23 item 4, ``AccelConfig.packed_weights``) end to end.

tiny-digits quantized with 4-bit weights (``--wbits 4``): on a build with the DMA's unpacker its
blocks' linear weights are stored two per byte and loaded with packed LOADs; the ISA simulator runs
it equal to the golden forward with fewer bytes read; the same model on a build without the unpacker
runs unpacked (int8 storage), and an 8-bit model never uses packed LOADs. Slow: the Verilator RTL of
the packed build runs it bit-exact (whole logit vectors) with cycles equal to the performance model,
on chip and on every external memory profile (ulx3s-sdram, ulx3s-litedram, arty-ddr3).
"""

import dataclasses
import os

import pytest

from vitaccel.config import preset
from vitaccel.isa import Opcode, decode_fields
from vitaccel.run import simulate_model
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.zoo import load_intvit, model_images

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with a 16-bit bus (the unpacker needs a pair of SPAD rows to be two bus words) and without.
PACKED = dataclasses.replace(preset("tiny"), name="tiny-packed", bus_bits=16, packed_weights=True).validate()
UNPACKED = dataclasses.replace(PACKED, name="tiny-bus16", packed_weights=False).validate()


@pytest.fixture(scope="module")
def w4(tmp_path_factory):
    path = tmp_path_factory.mktemp("w4") / "tiny-digits-w4.npz"
    quantize_model("tiny-digits", wbits=4, config=PACKED, output=path)
    return IntViT.load(path)


def packed_loads(program):
    return [f for op, f in map(decode_fields, program.instructions) if op is Opcode.LOAD and f["packed"]]


def assert_bit_exact(report):
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    assert all(r["predicted"] == r["golden"] for r in report["runs"])


def test_w4_model_packed_on_the_isa_simulator(w4):
    program = compile_model(w4, PACKED, name="w4")
    loads = packed_loads(program)
    # Every block linear layer's weights (qkv, proj, fc1, fc2), patch embedding and head at 8 bits.
    packed_symbols = sorted(n for n, s in program.symbols.items() if s.packed)
    assert packed_symbols == sorted(f"blocks.{i}.{layer}.w_t" for i in range(len(w4.blocks))
                                    for layer in ("qkv", "proj", "fc1", "fc2"))
    assert loads and all(f["rows"] % 2 == 0 and f["dram_stride"] == PACKED.cols for f in loads)
    plain = compile_model(w4, UNPACKED, name="w4")
    assert not packed_loads(plain)
    assert len(plain.instructions) == len(program.instructions)
    packed_perf, plain_perf = estimate(program), estimate(plain)
    assert packed_perf.bytes_read < plain_perf.bytes_read and packed_perf.cycles < plain_perf.cycles
    images, labels = model_images(w4, 3)
    for cfg in (PACKED, UNPACKED):
        assert_bit_exact(simulate_model(w4, cfg, images, labels, engine="isa", seed=SEED))


def test_packed_program_file_round_trip(w4, tmp_path):
    """A program file keeps the packed symbols: the weights read back equal the model's."""
    from vitaccel.sw.program import Program

    program = compile_model(w4, PACKED, name="w4")
    program.save(tmp_path / "w4.npz")
    loaded = Program.load(tmp_path / "w4.npz")
    assert loaded.symbols == program.symbols
    w_t = loaded.read_tensor(loaded.image, "blocks.0.fc1.w_t")
    assert loaded.symbols["blocks.0.fc1.w_t"].packed == PACKED.cols
    assert (w_t[:w4.blocks[0].fc1.weight.shape[1]] == w4.blocks[0].fc1.weight.T).all()


def test_8bit_model_never_packed():
    intvit = load_intvit("tiny-digits", PACKED)
    program = compile_model(intvit, PACKED, name="w8")
    assert not packed_loads(program) and not any(s.packed for s in program.symbols.values())


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["onchip", "ulx3s-sdram", "ulx3s-litedram", "arty-ddr3"])
def test_w4_model_packed_in_rtl(w4, memory):
    """The Verilator RTL of the packed build: bit-exact logits, cycles equal to the performance model."""
    images, labels = model_images(w4, 2)
    report = simulate_model(w4, PACKED, images, labels, engine="rtl", memory=memory, seed=SEED)
    assert_bit_exact(report)
    assert report["perf_error"] == 0.0, "the performance model must equal the RTL cycles"

"""The board top in Verilator, driven over its UART pins by the host driver's own protocol code.

:class:`~vitaccel.boards.top.System` for the ``tiny`` config (core, 128 KiB of on-chip AXI memory,
host link at 4 clocks per bit) runs under cocotb (tests/boards/cocotb_board.py): the tiny-digits
program image goes in over ``rx`` in block writes, two seeded-random held-out digits are run one
after the other (the second on what the first left in the memories), and their logits come back
over ``tx`` equal to the golden integer model's. VITACCEL_SEED picks the images.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from cocotb_tools.check_results import get_results

from vitaccel.boards import host
from vitaccel.boards.top import System
from vitaccel.config import preset
from vitaccel.sw.zoo import load_intvit, model_images
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.forward import forward, patches

# The cocotb build and run helpers of the unit tests sit in tests/hw, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parents[1] / "hw"))
from engine_bench import run_cocotb, verilator_build  # noqa: E402

SEED = int(os.environ.get("VITACCEL_SEED", "1"))
TOP = "vitaccel_system"
CLOCK_NS = 10
BIT_CLOCKS = 4               # the fastest line the host link takes: the image is most of the run
MEM_BYTES = 128 * 1024       # tiny-digits on `tiny` is 80,960 bytes: more than a board's default 64 KiB


@pytest.mark.slow
def test_tiny_digits_over_uart(tmp_path, monkeypatch):
    cfg = preset("tiny")
    intvit = load_intvit("tiny-digits", cfg)
    program = compile_model(intvit, cfg)
    assert host.image_bytes(program) <= MEM_BYTES
    images, _ = model_images(intvit, 360)
    pick = sorted(int(i) for i in np.random.default_rng(SEED).choice(len(images), 2, replace=False))
    print(f"seed {SEED}: digits test images {pick}")
    program.save(tmp_path / "program.npz")
    np.save(tmp_path / "inputs.npy", patches(images[pick], intvit.config.patch_size))
    np.save(tmp_path / "golden.npy", forward(intvit, images[pick]))

    clk_hz = 1_000_000_000 // CLOCK_NS
    system = System(cfg, mem_bytes=MEM_BYTES, clk_hz=clk_hz, baud=clk_hz // BIT_CLOCKS)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))      # cocotb_board.py, for the runner
    build_dir = verilator_build(monkeypatch, system, TOP, cfg, key=f"system-{cfg.slug}")
    results = run_cocotb(tmp_path, "cocotb_board", TOP, build_dir, {
        "VITACCEL_PROGRAM": str(tmp_path / "program.npz"),
        "VITACCEL_INPUTS": str(tmp_path / "inputs.npy"),
        "VITACCEL_GOLDEN": str(tmp_path / "golden.npy"),
        "VITACCEL_IMAGES": ",".join(map(str, pick)),
        "VITACCEL_MEM_BYTES": str(MEM_BYTES),
        "VITACCEL_SEED": str(SEED),
        "VITACCEL_CLOCK_NS": str(CLOCK_NS),
        "VITACCEL_BIT_CLOCKS": str(BIT_CLOCKS),
    })
    assert get_results(results) == (1, 0)

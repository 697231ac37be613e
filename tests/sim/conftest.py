"""Fixtures of tests/sim: random programs for a build feature's MATMUL and SOFTMAX modes (issue 23:
log2 attention, twin-uniform), and their check through the whole core in Verilator against the ISA
simulator and the performance model (tests/sim/test_log2_attention.py, test_twin_uniform.py); and
the issue's commands for a recipe (``vitaccel quantize``, then ``vitaccel simulate --engine rtl``)."""

import json

import numpy as np
import pytest

from vitaccel.isa import LocalMemory, Opcode, encode, encode_program
from vitaccel.sw import isasim
from vitaccel.sw.program import Program
from vitaccel.sw.softmax import softmax_params


def random_feature_program(cfg, rng, matmul_flags, softmax_flags, name: str) -> Program:
    """A random program on ``cfg`` (a tiny build with the feature): SPAD LOADs of random bytes,
    MATMULs (back to back, accumulating, transposed) with ``matmul_flags(rng)``'s fields, SOFTMAXes
    in place on rows of 1 .. 12 logits with ``softmax_flags(rng)``'s, REQUANTs; then everything it
    touched STOREd."""
    spad_b, acc_b = cfg.spad_row_bytes, cfg.acc_row_bytes
    data, out, spad_used, acc_used = 4096, 4096, 48, 12
    words = [encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=5, dram_addr=0, dram_stride=acc_b),
             encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=0, rows=spad_used, dram_addr=1024,
                    dram_stride=spad_b)]
    for _ in range(int(rng.integers(30, 60))):
        kind = rng.choice(["load", "matmul", "matmul", "matmul", "softmax", "softmax", "requant"])
        if kind == "load":
            rows = int(rng.integers(1, 9))
            words.append(encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=int(rng.integers(0, spad_used - rows)),
                                rows=rows, dram_addr=int(rng.integers(64, (data - rows * spad_b) // spad_b)) * spad_b,
                                dram_stride=spad_b))
        elif kind == "matmul":
            rows = int(rng.choice([1, 2, 3, 5, 9]))
            words.append(encode(Opcode.MATMUL, a_addr=int(rng.integers(0, spad_used - rows)),
                                b_addr=int(rng.integers(0, spad_used - cfg.rows)),
                                c_addr=int(rng.integers(0, acc_used - rows + 1)), rows=rows,
                                accumulate=int(rng.random() < 0.6), transpose_b=int(rng.random() < 0.3),
                                **matmul_flags(rng)))
        elif kind == "softmax":
            rows, length = int(rng.integers(1, 5)), int(rng.integers(1, 13))
            span = (-(-length // cfg.cols) - 1) * rows + rows
            src = int(rng.integers(0, spad_used - span + 1))
            words.append(encode(Opcode.SOFTMAX, src=src, dst=src, src2=3, rows=rows, length=length, tile_stride=rows,
                                param_addr=4, **softmax_flags(rng)))
        else:
            rows = int(rng.integers(1, 9))
            words.append(encode(Opcode.REQUANT, acc_addr=int(rng.integers(0, acc_used - rows + 1)),
                                spad_addr=int(rng.integers(0, spad_used - rows)), rows=rows, param_addr=0))
    words.append(encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=0, rows=spad_used, dram_addr=data,
                        dram_stride=spad_b))
    words.append(encode(Opcode.STORE, mem=LocalMemory.ACC, local_addr=0, rows=acc_used, dram_addr=data + 1024,
                        dram_stride=acc_b))
    words.append(encode(Opcode.STORE, mem=LocalMemory.PARAM, local_addr=3, rows=1, dram_addr=data + 2048,
                        dram_stride=acc_b))
    words.append(encode(Opcode.END))
    prog_addr = data + out
    image = bytearray(rng.integers(0, 256, data, dtype=np.uint8).tobytes())
    params = np.zeros((5, cfg.cols), dtype="<i4")
    params[0] = rng.integers(-2 ** 20, 2 ** 20, cfg.cols)                 # REQUANT bias, mult, shift
    params[1] = rng.integers(1, 2 ** (cfg.mult_bits - 1), cfg.cols)
    params[2] = rng.integers(10, 41, cfg.cols)
    params[4, :2] = softmax_params(float(rng.choice([0.02, 0.1, 0.5])))  # SOFTMAX mult, shift
    image[:params.nbytes] = params.tobytes()
    image += bytes(prog_addr - data)
    image += encode_program(words)
    return Program(cfg, words, bytes(image), prog_addr=prog_addr, name=name)


def assert_rtl_equals_isa(cfg, program: Program, seed: int) -> None:
    """``program`` through the whole core of ``cfg`` in Verilator: no error, the final image equal to
    the ISA simulator's (first differing byte and the seed printed), CYCLES the performance model's."""
    from vitaccel.sim.verilator import run_image
    from vitaccel.sw.perf import estimate

    want = isasim.run(program)
    assert want.ok, f"seed {seed}: the ISA simulator stopped with {want.error}"
    got = run_image(cfg, program.image, program.prog_addr)
    assert got.error.name == "NONE", f"seed {seed}: the core stopped with {got.error.name} at pc {got.pc:#x}"
    a, b = np.frombuffer(got.image, np.uint8), np.frombuffer(want.image, np.uint8)
    assert np.array_equal(a, b), f"seed {seed}: images differ first at byte {int(np.argmax(a != b))}"
    assert got.cycles == estimate(program).cycles, f"seed {seed}: RTL {got.cycles} cycles, perf model differs"


@pytest.fixture
def feature_program():
    """:func:`random_feature_program`."""
    return random_feature_program


@pytest.fixture
def rtl_equals_isa():
    """:func:`assert_rtl_equals_isa`."""
    return assert_rtl_equals_isa


def assert_recipe_runs_in_rtl(tmp_path, capsys, cfg, recipe: str, *quantize_args: str, images: int = 3,
                              seed: int = 0) -> dict:
    """The commands of issue 23 for one recipe: ``vitaccel quantize --model tiny-digits --recipe
    RECIPE [quantize_args]``, then ``vitaccel simulate --engine rtl --images N --json`` on ``cfg``
    (saved as a TOML file): every image bit-exact (whole logit vectors), every run's Verilator cycles
    equal to the performance model's. Returns the simulate report."""
    from vitaccel.cli import main

    model, config = tmp_path / f"{recipe}.npz", tmp_path / "build.toml"
    cfg.save(config)
    assert main(["quantize", "--model", "tiny-digits", "--recipe", recipe, *quantize_args, "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["simulate", "--model", str(model), "--config", str(config), "--engine", "rtl",
                 "--images", str(images), "--seed", str(seed), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert report["bit_exact"] and not bad, f"seed {seed}: first image not bit-exact: {bad[0] if bad else report}"
    assert [r["cycles"] for r in report["runs"]] == [report["perf_cycles"]] * images, \
        f"seed {seed}: RTL cycles {[r['cycles'] for r in report['runs']]}, perf model {report['perf_cycles']}"
    assert report["perf_error"] == 0.0
    return report


@pytest.fixture
def recipe_runs_in_rtl():
    """:func:`assert_recipe_runs_in_rtl`."""
    return assert_recipe_runs_in_rtl

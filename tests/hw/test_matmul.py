# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""MatmulEngine against a numpy model of MATMUL, on real Amaranth memories.

Each test runs a sequence of commands in one simulation and compares the whole accumulator memory
with the model after every command, and the busy time with :func:`matmul_cycles`.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from vitaccel.config import preset
from vitaccel.hw.array import array_latency
from vitaccel.hw.matmul import MatmulEngine, matmul_cycles, matmul_issue_cycles, weights_apart
from vitaccel.hw.memories import READ_LATENCY
from vitaccel.isa import Opcode, encode
from vitaccel.sw.golden import matmul
from vitaccel.sw.softmax import log2_operand, log_sqrt2_operand, twin_operand

# The bench shared with the other engine tests sits beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import EngineBench, contents, run_commands, simulate  # noqa: E402


def small(name, **changes):
    """A preset with small memories, so that the testbench compares them quickly."""
    return dataclasses.replace(preset(name), spad_rows=64, acc_rows=32, **changes).validate()


def model(cfg, spad, acc, cmd):
    """MATMUL on numpy arrays (``acc`` updated in place), through the golden :func:`matmul`."""
    rows = cmd["rows"]
    if rows == 0:
        return
    c = slice(cmd["c_addr"], cmd["c_addr"] + rows)
    a = spad[cmd["a_addr"]:cmd["a_addr"] + rows]
    if cmd.get("twin_a") and cfg.twin_uniform:
        a = twin_operand(a, cmd["twin_m"], gelu=bool(cmd.get("log2_a")))
    elif cmd.get("log2_a") and cfg.log_sqrt2_attention and cmd.get("twin_m"):
        a = log_sqrt2_operand(a)
    elif cmd.get("log2_a") and cfg.log2_attention:
        a = log2_operand(a)
    acc[c] = matmul(a, spad[cmd["b_addr"]:cmd["b_addr"] + cfg.rows],
                    acc[c] if cmd["accumulate"] else None, transpose_b=cmd.get("transpose_b", 0))


def run(cfg, spad, acc, commands, seed):
    """Execute ``commands`` one after another; check memory and busy time after each."""
    engine = MatmulEngine(cfg)
    expected = acc.copy()
    run_commands(EngineBench(engine, cfg, spad=spad, acc=acc), commands,
                 lambda cmd: encode(Opcode.MATMUL, **cmd),
                 lambda cmd: (matmul_cycles(cfg, cmd["rows"], apart(cfg, cmd)), engine.cycles(cmd["rows"], apart(cfg, cmd))),
                 lambda cmd: model(cfg, spad, expected, cmd), {"acc": expected}, seed)


def apart(cfg, cmd):
    return weights_apart(cfg, cmd["a_addr"], cmd["rows"], cmd["b_addr"])


def random_memories(cfg, rng):
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols), dtype=np.int8)
    acc = rng.integers(-(1 << 31), 1 << 31, (cfg.acc_rows, cfg.cols), dtype=np.int64).astype(np.int32)
    acc[:2] = np.array([[np.iinfo(np.int32).max], [np.iinfo(np.int32).min]])  # accumulating wraps around
    return spad, acc


def cmd(a_addr, b_addr, c_addr, rows, accumulate, transpose_b=0, log2_a=0, twin_a=0, twin_m=0):
    return dict(a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, rows=rows, accumulate=accumulate,
                transpose_b=transpose_b, log2_a=log2_a, twin_a=twin_a, twin_m=twin_m)


def test_cycle_formula():
    cfg = preset("default")
    assert array_latency(cfg) == 12 + 12 + 2
    assert matmul_cycles(cfg, 0) == 0
    assert matmul_cycles(cfg, 197) == 12 + 197 + 26 + 4  # + READ_LATENCY
    assert MatmulEngine.ACC_READ_AHEAD == READ_LATENCY + 1
    # A weight tile in another bank than the input rows: read beside them after a lead of 4.
    assert cfg.spad_banks == 4 and cfg.spad_rows // 4 == 2048
    assert weights_apart(cfg, 0, 197, 2048) and not weights_apart(cfg, 0, 197, 2047 - 11)
    assert not weights_apart(cfg, 2040, 9, 2048) and weights_apart(cfg, 2040, 8, 2048)
    assert matmul_cycles(cfg, 197, apart=True) == 4 + 197 + 26 + 4
    assert matmul_issue_cycles(cfg, 197, apart=True) == 4 + 197
    assert matmul_issue_cycles(cfg, 1, apart=True) == 4 + 10 and matmul_issue_cycles(cfg, 1) == 12 + 10


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 10),
    ("tiny", dict(rows=5, cols=5, bus_bits=8, requant_lanes=1, vector_lanes=1), 11),
    ("default", {}, 12),
])
def test_sequence_of_commands(name, changes, seed):
    cfg = small(name, **changes)
    rng = np.random.default_rng(seed)
    spad, acc = random_memories(cfg, rng)
    n = cfg.rows
    run(cfg, spad, acc, [
        cmd(a_addr=5, b_addr=40, c_addr=0, rows=19, accumulate=0),
        cmd(a_addr=30, b_addr=20, c_addr=0, rows=19, accumulate=1),
        cmd(a_addr=0, b_addr=64 - n, c_addr=31, rows=1, accumulate=1),
        cmd(a_addr=3, b_addr=0, c_addr=7, rows=0, accumulate=0),
        cmd(a_addr=63, b_addr=1, c_addr=30, rows=1, accumulate=0),
    ], seed)


@pytest.mark.parametrize("name,seed", [("tiny", 20), ("default", 21)])
def test_transposed_weights(name, seed):
    """transpose_b loads spad rows as weight columns (Q @ K.T); mixed with untransposed commands."""
    cfg = small(name)
    rng = np.random.default_rng(seed)
    spad, acc = random_memories(cfg, rng)
    run(cfg, spad, acc, [
        cmd(a_addr=5, b_addr=40, c_addr=0, rows=9, accumulate=0, transpose_b=1),
        cmd(a_addr=5, b_addr=40, c_addr=10, rows=9, accumulate=0),
        cmd(a_addr=30, b_addr=17, c_addr=0, rows=9, accumulate=1, transpose_b=1),
    ], seed)


@pytest.mark.parametrize("a,w", [(-128, -128), (127, 127), (-128, 127)])
def test_extreme_values(a, w):
    cfg = small("tiny")
    spad = np.full((cfg.spad_rows, cfg.cols), a, dtype=np.int8)
    spad[32:32 + cfg.rows] = w
    acc = np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32)
    acc[:3] = np.array([[np.iinfo(np.int32).max], [np.iinfo(np.int32).min], [-1]])
    run(cfg, spad, acc, [
        cmd(a_addr=0, b_addr=32, c_addr=0, rows=6, accumulate=1),
        cmd(a_addr=0, b_addr=32, c_addr=8, rows=6, accumulate=0),
    ], seed=None)


def run_back_to_back(cfg, spad, acc, commands, seed, gaps):
    """Offer each command ``gaps[n]`` cycles after the engine is ready (0: in the cycle ready
    rises); check that ready rises :func:`matmul_issue_cycles` after each acceptance, that busy
    falls :func:`matmul_cycles` after the last, and the whole accumulator at the end."""
    engine = MatmulEngine(cfg)
    bench = EngineBench(engine, cfg, spad=spad, acc=acc)
    expected = acc.copy()
    for c in commands:
        model(cfg, spad, expected, c)

    async def testbench(ctx):
        for n, c in enumerate(commands):
            where = f"seed {seed}, command {n} {c}"
            waited = 0
            while not ctx.get(engine.cmd.ready) or waited < gaps[n]:
                waited += ctx.get(engine.cmd.ready)
                await ctx.tick()
            ctx.set(engine.cmd.payload.bits, encode(Opcode.MATMUL, **c))
            await ctx.tick()
            ctx.set(engine.cmd.valid, 1)
            await ctx.tick()
            ctx.set(engine.cmd.valid, 0)
            issuing = 0
            while not ctx.get(engine.cmd.ready):
                issuing += 1
                await ctx.tick()
            assert issuing == matmul_issue_cycles(cfg, c["rows"], apart(cfg, c)), f"{where}: ready after {issuing} cycles"
        # The last command was accepted matmul_issue_cycles ago (+1: its acceptance cycle).
        busy = matmul_issue_cycles(cfg, commands[-1]["rows"], apart(cfg, commands[-1]))
        while ctx.get(engine.busy):
            busy += 1
            await ctx.tick()
        assert busy == matmul_cycles(cfg, commands[-1]["rows"], apart(cfg, commands[-1])), f"seed {seed}: busy {busy}"
        await ctx.tick().repeat(2)
        got = contents(ctx, bench.memories["acc"])
        mismatch = np.argwhere(got != expected)
        assert np.array_equal(got, expected), f"seed {seed}: first mismatch at acc[row, col] = {mismatch[0]}"

    simulate(bench, testbench)


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 30),
    ("tiny", dict(rows=5, cols=5, bus_bits=8, requant_lanes=1, vector_lanes=1), 31),
    ("default", {}, 32),
    ("default", {}, 33),
    ("default", dict(spad_banks=2), 34),
])
def test_back_to_back_commands_overlap_their_drain(name, changes, seed):
    """Commands offered as soon as the engine is ready (their rows drain meanwhile), short and long,
    transposed or not, accumulating into the rows the previous one writes: the accumulator equals
    running them one at a time, and every command's timing follows the formulas."""
    cfg = small(name, **changes)
    rng = np.random.default_rng(seed)
    spad, acc = random_memories(cfg, rng)
    commands, gaps = [], []
    for _ in range(14):
        rows = int(rng.choice([1, 2, cfg.cols - 3, cfg.cols - 2, cfg.cols - 1, 9, 17]))
        rows = max(1, min(rows, cfg.acc_rows))
        commands.append(cmd(a_addr=int(rng.integers(0, cfg.spad_rows - rows)),
                            b_addr=int(rng.integers(0, cfg.spad_rows - cfg.rows)),
                            c_addr=int(rng.integers(0, 3)), rows=rows, accumulate=int(rng.random() < 0.7),
                            transpose_b=int(rng.random() < 0.4)))
        gaps.append(int(rng.choice([0, 0, 0, 1, 3])))
    run_back_to_back(cfg, spad, acc, commands, seed, gaps)


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_converts_to_verilog(name):
    text = verilog.convert(MatmulEngine(preset(name)), name="matmul_engine")
    assert "module matmul_engine" in text


def test_rejects_what_is_not_a_config():
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        MatmulEngine("tiny")


@pytest.mark.parametrize("name,seed", [("tiny", 30), ("default", 31)])
def test_log2_codes(name, seed):
    """A log2_attention build: log2_a commands (random bytes: only the low 4 bits count, 0 is 0)
    back to back with int8 ones and transposed ones, accumulating and not; the same cycles."""
    cfg = small(name, log2_attention=True)
    rng = np.random.default_rng(seed)
    spad, acc = random_memories(cfg, rng)
    spad[5:9, 0] = 0          # zero codes
    spad[5:9, 1] = 15         # 2**14
    n = cfg.rows
    run(cfg, spad, acc, [
        cmd(a_addr=5, b_addr=40, c_addr=0, rows=19, accumulate=0, log2_a=1),
        cmd(a_addr=30, b_addr=20, c_addr=0, rows=19, accumulate=1),
        cmd(a_addr=5, b_addr=40, c_addr=10, rows=9, accumulate=1, transpose_b=1, log2_a=1),
        cmd(a_addr=0, b_addr=64 - n, c_addr=31, rows=1, accumulate=1, log2_a=1),
        cmd(a_addr=63, b_addr=1, c_addr=30, rows=1, accumulate=0),
        cmd(a_addr=2, b_addr=50, c_addr=20, rows=3, accumulate=0, log2_a=1),
    ], seed)


@pytest.mark.parametrize("w", [-128, 127])
def test_log2_extremes_fit_the_partial_sums(w):
    """Every code 15 (2**14) against weights -128 or 127: rows * 2**14 * w, exact (psum_width)."""
    cfg = small("default", log2_attention=True)
    spad = np.full((cfg.spad_rows, cfg.cols), 15, dtype=np.int8)
    spad[32:32 + cfg.rows] = w
    acc = np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32)
    run(cfg, spad, acc, [cmd(a_addr=0, b_addr=32, c_addr=0, rows=6, accumulate=1, log2_a=1),
                         cmd(a_addr=0, b_addr=32, c_addr=8, rows=6, accumulate=0, log2_a=1)], seed=None)


def test_log2_flag_is_ignored_without_the_feature():
    cfg = small("tiny")
    rng = np.random.default_rng(32)
    spad, acc = random_memories(cfg, rng)
    run(cfg, spad, acc, [cmd(a_addr=5, b_addr=40, c_addr=0, rows=7, accumulate=0, log2_a=1)], seed=32)


@pytest.mark.parametrize("name,changes,seed", [("tiny", {}, 40), ("default", {}, 41),
                                               ("tiny", dict(log2_attention=True), 42)])
def test_twin_codes_back_to_back(name, changes, seed):
    """A twin_uniform build: twin probability and twin GELU commands with different m (0..10),
    offered as soon as the engine is ready, between int8 (and log2) ones, transposed or not,
    accumulating or not: the accumulator equals the golden decode (sw/softmax.twin_operand), the
    flags and shifts travel with each command's rows, every command's timing is MATMUL's."""
    cfg = small(name, twin_uniform=True, **changes)
    rng = np.random.default_rng(seed)
    spad, acc = random_memories(cfg, rng)
    acc[:] = 0     # 127 << 10 products: keep the sums away from the int32 wrap the model also does
    commands, gaps = [], []
    for k in range(14):
        rows = int(rng.choice([1, 2, cfg.cols - 1, 9, 17]))
        rows = max(1, min(rows, cfg.acc_rows))
        mode = k % 4 if not cfg.log2_attention else k % 5
        commands.append(cmd(a_addr=int(rng.integers(0, cfg.spad_rows - rows)),
                            b_addr=int(rng.integers(0, cfg.spad_rows - cfg.rows)),
                            c_addr=int(rng.integers(0, 3)), rows=rows, accumulate=int(rng.random() < 0.7),
                            transpose_b=int(rng.random() < 0.4), twin_a=int(mode in (1, 2)),
                            log2_a=int(mode in (2, 4)), twin_m=int(rng.choice([0, 1, 5, 9, 10]))))
        gaps.append(int(rng.choice([0, 0, 1, 3])))
    run_back_to_back(cfg, spad, acc, commands, seed, gaps)


@pytest.mark.parametrize("w", [-128, 127])
@pytest.mark.parametrize("code,gelu", [(-1, 0), (127, 1), (-128, 1)])
def test_twin_extremes_fit_the_partial_sums(w, code, gelu):
    """Every operand 127 << 10 (a flagged 127, or GELU 127) or -128 (GELU) against weights -128
    or 127: rows * operand * w, exact (18-bit operands, product_width, psum_width)."""
    cfg = small("default", twin_uniform=True)
    spad = np.full((cfg.spad_rows, cfg.cols), code, dtype=np.int8)
    spad[32:32 + cfg.rows] = w
    acc = np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32)
    run(cfg, spad, acc, [cmd(a_addr=0, b_addr=32, c_addr=0, rows=6, accumulate=1, twin_a=1, log2_a=gelu, twin_m=10),
                         cmd(a_addr=0, b_addr=32, c_addr=8, rows=6, accumulate=0, twin_a=1, log2_a=gelu, twin_m=10)],
        seed=None)


def test_twin_flags_are_ignored_without_the_feature():
    cfg = small("tiny")
    rng = np.random.default_rng(33)
    spad, acc = random_memories(cfg, rng)
    run(cfg, spad, acc, [cmd(a_addr=5, b_addr=40, c_addr=0, rows=7, accumulate=0, twin_a=1, twin_m=7)], seed=33)


def test_twin_build_converts_to_verilog():
    text = verilog.convert(MatmulEngine(small("tiny", twin_uniform=True, log2_attention=True)), name="matmul_engine")
    assert "module matmul_engine" in text


@pytest.mark.parametrize("name,changes,seed", [("tiny", {}, 50), ("default", {}, 51),
                                               ("tiny", dict(log2_attention=True, twin_uniform=True), 52)])
def test_log_sqrt2_codes_back_to_back(name, changes, seed):
    """A log_sqrt2_attention build: log-sqrt2 commands (log2_a with twin_m 4 or 5) offered as soon
    as the engine is ready, between int8 (log2, twin) ones, transposed or not, accumulating or not:
    the accumulator equals the golden decode (sw/softmax.log_sqrt2_operand), the flag travels with
    each command's rows, every command's timing is MATMUL's."""
    cfg = small(name, log_sqrt2_attention=True, **changes)
    rng = np.random.default_rng(seed)
    spad, acc = random_memories(cfg, rng)
    acc[:] = 0     # 2**16 operands: keep the sums away from the int32 wrap
    commands, gaps = [], []
    for k in range(14):
        rows = int(rng.choice([1, 2, cfg.cols - 1, 9, 17]))
        modes = [0, 1, 1, 2] + ([3] if cfg.twin_uniform else [])     # int8, log-sqrt2, log2 (or int8), twin
        mode = modes[k % len(modes)]
        commands.append(cmd(a_addr=int(rng.integers(0, cfg.spad_rows - rows)),
                            b_addr=int(rng.integers(0, cfg.spad_rows - cfg.rows)),
                            c_addr=int(rng.integers(0, 3)), rows=rows, accumulate=int(rng.random() < 0.7),
                            transpose_b=int(rng.random() < 0.4), log2_a=int(mode in (1, 2)), twin_a=int(mode == 3),
                            twin_m=int(rng.choice([4, 5])) if mode in (1, 3) else 0))
        gaps.append(int(rng.choice([0, 0, 1, 3])))
    run_back_to_back(cfg, spad, acc, commands, seed, gaps)


@pytest.mark.parametrize("w", [-128, 127])
def test_log_sqrt2_extremes_fit_the_partial_sums(w):
    """Every operand 2**16 (byte 31) against weights -128 or 127: rows * 2**16 * w, exact."""
    cfg = small("default", log_sqrt2_attention=True)
    spad = np.full((cfg.spad_rows, cfg.cols), 31, dtype=np.int8)
    spad[32:32 + cfg.rows] = w
    acc = np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32)
    run(cfg, spad, acc, [cmd(a_addr=0, b_addr=32, c_addr=0, rows=6, accumulate=1, log2_a=1, twin_m=5),
                         cmd(a_addr=0, b_addr=32, c_addr=8, rows=6, accumulate=0, log2_a=1, twin_m=4)], seed=None)


@pytest.mark.parametrize("changes", [{}, dict(log2_attention=True)])
def test_log_sqrt2_width_is_ignored_without_the_feature(changes):
    """tiny: log2_a with twin_m 5 reads int8 bytes; a log2 build reads FQ-ViT's log2 codes."""
    cfg = small("tiny", **changes)
    rng = np.random.default_rng(34)
    spad, acc = random_memories(cfg, rng)
    run(cfg, spad, acc, [cmd(a_addr=5, b_addr=40, c_addr=0, rows=7, accumulate=0, log2_a=1, twin_m=5)], seed=34)


def test_log_sqrt2_build_converts_to_verilog():
    text = verilog.convert(MatmulEngine(small("tiny", log_sqrt2_attention=True)), name="matmul_engine")
    assert "module matmul_engine" in text

"""benchmarks/paths.py on a small synthesized design: it finds the register-to-register paths and
names their source lines."""

import json
import subprocess

from amaranth.back import rtlil
from amaranth.hdl import Module, Signal

from vitaccel.boards.build import tool_env



def test_paths_ranks_a_deep_path_above_a_shallow_one(tmp_path, benchmark_module):
    m = Module()
    a, b, deep, shallow, x = Signal(16), Signal(16), Signal(16), Signal(16), Signal(16)
    m.d.sync += [a.eq(a + x), b.eq(b ^ x)]
    m.d.sync += deep.eq((a * b)[:16])          # a 16x16 LUT multiplier (no DSPs with -nodsp)
    m.d.sync += shallow.eq(a ^ b)
    (tmp_path / "t.il").write_text(rtlil.convert(m, ports=[x, deep, shallow]))
    subprocess.run([tool_env()["YOSYS"], "-q", "-p", "read_rtlil t.il; synth_ecp5 -nodsp -top top; write_json t.json"],
                   cwd=tmp_path, check=True)
    paths = benchmark_module("paths")
    endpoints, names, loops = paths.analyse(json.loads((tmp_path / "t.json").read_text()))
    assert not loops and endpoints
    worst_ns, worst_cell, _, worst_path = endpoints[0]
    assert worst_ns > 5 and len(worst_path) > 4, "the multiplier is the deepest path"
    assert "test_paths.py" in names.get(worst_path[0][0], ""), "named by the source line of its start"
    shallow_ends = [ns for ns, cell, _, path in endpoints if len(path) == 2]
    assert shallow_ends and max(shallow_ends) < worst_ns


def test_routed_arrivals_from_nextpnr_report(benchmark_module):
    """--routed reads nextpnr's detailed report as it is: arrival times at endpoints (the worst over
    the nets reaching one), the halves of a carry cell under the yosys cell's name (which may hold
    a ``$`` of its own)."""
    paths = benchmark_module("paths")
    report = {"detailed_net_timings": [
        {"driver": "ff1", "port": "Q", "net": "n1", "endpoints": [
            {"cell": "ff2", "port": "DI", "delay": [0.9, 1.1]},
            {"cell": "rx$24.add$CCU2_COMB1", "port": "A1", "delay": [3.0, 3.25]}]},
        {"driver": "lut1", "port": "F", "net": "n2", "endpoints": [
            {"cell": "ff2", "port": "DI", "delay": [4.0, 4.5]}]}]}
    assert paths.routed_arrivals(report) == {("ff2", "DI"): 4.5, ("rx$24.add", "A1"): 3.25}

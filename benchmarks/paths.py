"""Rank the long register-to-register paths of a synthesized ECP5 netlist, in seconds, before any
place-and-route.

    python benchmarks/paths.py build/estimate/<run>/top.json            # worst 25 endpoints
    python benchmarks/paths.py top.json --top 60 --group                # worst path per register
    python benchmarks/paths.py --engine softmax --config default --group  # synthesize one engine first
    python benchmarks/paths.py top.json --routed top.report.json --group  # routed arrival times

nextpnr prints one critical path, and only after routing (tens of minutes for ``default``). This
reads yosys' ``write_json`` netlist (``synth_ecp5``'s cells: LUT4, PFUMX, L6MUX21, CCU2C,
TRELLIS_FF, DP16KD, MULT18X18D) and computes every endpoint's arrival time with a fixed delay per
cell and per net, so all the deep paths show at once, named by the registers they start and end
at. The delays are rough averages of nextpnr's ECP5 (-6 grade) timing after placement, not a
sign-off: use the ranking, then measure Fmax with nextpnr (``vitaccel estimate``).
"""

import argparse
import collections
import re
import json
import sys

#: Nanoseconds: the delay of a routed net, and of each cell arc.
NET = 0.6
LUT = 0.4
MUX = 0.25          # PFUMX / L6MUX21
CARRY_IN = 0.45     # CCU2C: an operand to the carry out
CARRY_BIT = 0.03    # CCU2C: carry in to carry out (two bits)
CARRY_SUM = 0.4     # CCU2C: carry in or operand to a sum
FF_CLK_Q = 0.5
BRAM_CLK_Q = 4.3    # DP16KD without its output register
MULT_CLK_Q = 0.6    # MULT18X18D output register
MULT_SETUP = 3.0    # MULT18X18D inputs to its output register
SETUP = 0.15

_COMB = {
    "LUT4": ({"A", "B", "C", "D"}, {"Z"}),
    "PFUMX": ({"ALUT", "BLUT", "C0"}, {"Z"}),
    "L6MUX21": ({"D0", "D1", "SD"}, {"Z"}),
}


def _arcs(cell):
    """The combinational arcs (input port, output port, delay) of a cell."""
    kind = cell["type"]
    if kind in _COMB:
        ins, outs = _COMB[kind]
        delay = LUT if kind == "LUT4" else MUX
        return [(i, o, delay) for i in ins for o in outs]
    if kind == "CCU2C":
        arcs = [("CIN", "COUT", CARRY_BIT), ("CIN", "S0", CARRY_SUM), ("CIN", "S1", CARRY_SUM)]
        for bit in "01":
            for op in "ABCD":
                arcs.append((op + bit, "COUT", CARRY_IN))
                arcs.append((op + bit, "S" + bit, CARRY_SUM))
                if bit == "0":
                    arcs.append((op + bit, "S1", CARRY_SUM + CARRY_BIT))
        return arcs
    if kind == "TRELLIS_DPR16X4":
        return [(f"RAD{i}", f"DO{j}", LUT) for i in range(4) for j in range(4)]
    return []


def _launch(cell):
    """Output ports that start a path, with their clock-to-output delay."""
    kind = cell["type"]
    if kind == "TRELLIS_FF":
        return {"Q": FF_CLK_Q}
    if kind == "DP16KD":
        return {p: BRAM_CLK_Q for p, d in cell["port_directions"].items() if d == "output"}
    if kind == "MULT18X18D":
        return {p: MULT_CLK_Q for p, d in cell["port_directions"].items() if d == "output"}
    if kind in ("TRELLIS_IO", "EHXPLLL"):
        return {p: 0.0 for p, d in cell["port_directions"].items() if d == "output"}
    return {}


def _capture(cell):
    """Input ports that end a path, with their setup time."""
    kind = cell["type"]
    if kind == "TRELLIS_FF":
        return {p: SETUP for p in ("DI", "CE", "LSR", "M") if p in cell["connections"]}
    if kind == "DP16KD":
        return {p: SETUP for p, d in cell["port_directions"].items()
                if d == "input" and not p.startswith("CLK")}
    if kind == "MULT18X18D":
        return {p: MULT_SETUP for p, d in cell["port_directions"].items()
                if d == "input" and p[0] in "AB" and p[1:].isdigit()}
    if kind == "TRELLIS_DPR16X4":
        return {p: SETUP for p in cell["connections"] if p.startswith(("WAD", "DI", "WRE"))}
    return {}


def placed_locations(placed, netlist):
    """Tile ``(x, y)`` of every cell of the yosys ``netlist``, from nextpnr's ``--write`` output
    ``placed``. nextpnr keeps the names of LUTs, flip-flops, block RAMs and DSPs, and names a carry
    cell's two halves after it; a LUT multiplexer takes the tile of a LUT that drives it."""
    top = next(m for m in placed["modules"].values() if m.get("attributes", {}).get("top")) \
        if any(m.get("attributes", {}).get("top") for m in placed["modules"].values()) \
        else next(iter(placed["modules"].values()))
    where = {}
    for name, cell in top["cells"].items():
        bel = cell.get("attributes", {}).get("NEXTPNR_BEL", "")
        found = re.match(r"X(\d+)/Y(\d+)/", bel)
        if found:
            where[name] = (int(found[1]), int(found[2]))
    cells = next(m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))["cells"]
    driver = {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) == "output":
                driver.update((bit, name) for bit in bits if isinstance(bit, int))
    locations = {}
    for name, cell in cells.items():
        # Carry cells become two slices named after them; LUT multiplexers (PFUMX, L6MUX21) share
        # a slice with the LUTs that drive them.
        for kept in (name, name + "$CCU2_COMB0"):
            if kept in where:
                locations[name] = where[kept]
                break
        else:
            inputs = [driver.get(bit) for port, bits in cell["connections"].items()
                      if cell.get("port_directions", {}).get(port) == "input" for bit in bits]
            kept = [where[d] for d in inputs if d in where]
            if kept:
                locations[name] = kept[0]
    return locations


def placed_net_delay(locations):
    """A net delay from placement, as nextpnr-ecp5 predicts an unrouted arc: 0.25 ns plus 0.1 ns per
    tile of Manhattan distance."""
    def delay(driver, sink):
        a, b = locations.get(driver), locations.get(sink)
        if a is None or b is None:
            return NET
        return 0.25 + 0.1 * (abs(a[0] - b[0]) + abs(a[1] - b[1]))
    return delay


def routed_arrivals(report):
    """``{(cell, port): ns}``: the routed arrival time at every timing endpoint (register and
    block input) of a design, from nextpnr's ``--report`` written with
    ``--detailed-timing-report``. That report lists, for each net that reaches an endpoint, the
    endpoint's arrival (clock-to-out, logic and routed wires from the launching clock edge, setup
    not included), not the net's own delay. nextpnr names the halves of carry cells and LUT RAMs
    after the yosys cell with a suffix such as ``$CCU2_COMB0`` (yosys names may hold ``$`` too)."""
    arrivals = {}
    for net in report["detailed_net_timings"]:
        for end in net["endpoints"]:
            key = (re.sub(r"\$(CCU2_COMB\d|DPRAM_COMB\d|RAMW_SLICE)$", "", end["cell"]), end["port"])
            arrivals[key] = max(arrivals.get(key, 0.0), max(end["delay"]))
    return arrivals


def analyse(netlist, net_delay=None):
    """``(endpoints, names)``: every endpoint as ``(arrival + setup, cell, port, path)`` with the
    path a list of ``(net bit, arrival)`` from its launch, worst first; ``names`` maps net bits to
    their most readable name. ``net_delay(driver cell, sink cell)`` gives each net's delay
    (:func:`placed_net_delay`); without it every net costs :data:`NET`."""
    net_cost = net_delay or (lambda driver, sink: NET)
    modules = netlist["modules"]
    top = next(m for m in modules.values() if m.get("attributes", {}).get("top"))
    names = {}
    for name, net in top["netnames"].items():
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in names or (names[bit][0] and not net["hide_name"])):
                names[bit] = (net["hide_name"], name)
    names = {bit: name for bit, (_, name) in names.items()}

    drivers = {}       # net bit -> the net bits of the arcs that drive it
    readers = collections.defaultdict(list)   # net bit -> [(driven net bit, arc delay, cell)]
    driver_cell = {}   # net bit -> the cell that drives it
    arrival, parent, source = {}, {}, {}
    for cname, cell in top["cells"].items():
        conns = cell["connections"]
        src = cell.get("attributes", {}).get("src", "").split("|")[0]
        src = src.rsplit("/", 1)[-1] if src and not src.startswith("/share") else ""
        for port, delay in _launch(cell).items():
            for bit in conns.get(port, []):
                if isinstance(bit, int):
                    arrival[bit], parent[bit] = delay, None
                    source[bit] = src
        for port, d in cell.get("port_directions", {}).items():
            if d == "output":
                for bit in conns.get(port, []):
                    if isinstance(bit, int):
                        driver_cell[bit] = cname
                        if src:
                            source[bit] = src
        for i, o, delay in _arcs(cell):
            for ibit in conns.get(i, []):
                for obit in conns.get(o, []):
                    if isinstance(ibit, int) and isinstance(obit, int):
                        # A carry chain's CIN comes by dedicated wire, not general routing.
                        readers[ibit].append((obit, delay, cname, i == "CIN"))
                        drivers.setdefault(obit, []).append(ibit)

    # Longest arrival over the combinational DAG (Kahn's order).
    pending = {bit: len(srcs) for bit, srcs in drivers.items()}
    # Nets no arc drives: launched by a register or memory, else constant or a top-level input.
    ready = [bit for bit in readers if bit not in pending]
    order = []
    while ready:
        bit = ready.pop()
        order.append(bit)
        for obit, delay, cname, carry in readers.get(bit, []):
            # A carry chain's CIN comes by dedicated wire, not general routing.
            t = arrival.get(bit, 0.0) + (0.0 if carry else net_cost(driver_cell.get(bit), cname)) + delay
            if t > arrival.get(obit, -1.0):
                arrival[obit], parent[obit] = t, bit
            pending[obit] -= 1
            if pending[obit] == 0:
                ready.append(obit)
    loops = [bit for bit, n in pending.items() if n > 0]

    endpoints = []
    for cname, cell in top["cells"].items():
        for port, setup in _capture(cell).items():
            for bit in cell["connections"].get(port, []):
                if isinstance(bit, int) and bit in arrival:
                    endpoints.append((arrival[bit] + net_cost(driver_cell.get(bit), cname) + setup, cname, port, bit))
    endpoints.sort(reverse=True)

    def path(bit):
        steps = []
        while bit is not None:
            steps.append((bit, arrival.get(bit, 0.0)))   # a top-level input or constant: 0
            bit = parent.get(bit)
        return steps[::-1]

    for bit, name in names.items():
        if source.get(bit):
            names[bit] = f"{source[bit]} {name}"
    ends = {}
    for cname, cell in top["cells"].items():
        src = cell.get("attributes", {}).get("src", "").split("|")[0].rsplit("/", 1)[-1]
        ends[cname] = f"{src} {cname}" if src and not src.startswith("cells_") else cname
    return [(t, ends[c], p, path(b)) for t, c, p, b in endpoints], names, loops


def _where(label):
    """A label's source line, or for an unattributed memory output its memory's name."""
    head, _, name = label.partition(" ")
    if ".py:" in head:
        if head.startswith(("contextlib.py", "fifo.py", "memory.py", "stream.py")):   # amaranth's own
            return head + "@" + ".".join(name.split(".")[:-1])[:48]
        return head
    return re.sub(r"(\.\d+)+_DO[AB]\d+$", "", label)


def _ends(start_label, end_cell, path_labels):
    """Where a path starts and ends: source lines, else memory names."""
    end = _where(end_cell)
    if ".py:" not in end.split(" ")[0]:
        on_path = [label for label in path_labels[::-1] if ".py:" in label.split(" ")[0]]
        end = "~" + on_path[0] if on_path else _where(path_labels[-1])
    return _where(start_label).split(" ")[0], end.split(" ")[0]


def _short(name, width=110):
    return name if len(name) <= width else "..." + name[-width + 3:]


def synthesize_engine(name, config_name):
    """yosys ``synth_ecp5`` of one engine in :class:`fmax.EngineProbe` (real memories on its
    ports); returns the netlist's path under ``build/paths/``."""
    import subprocess
    import time
    from pathlib import Path

    from amaranth.back import rtlil

    sys.path.insert(0, str(Path(__file__).parent))
    from fmax import EngineProbe, ENGINES   # noqa: E402
    from vitaccel.boards import BOARDS
    from vitaccel.boards.build import ECP5_SYNTH_OPTS, tool_env
    from vitaccel.config import load_config
    from vitaccel.files import build_root

    if name not in ENGINES:
        sys.exit(f"unknown engine {name!r}: one of {', '.join(ENGINES)}")
    cfg = load_config(config_name)
    probe = EngineProbe(cfg, name)
    run_dir = build_root() / "paths" / f"{name}-{cfg.slug}"
    run_dir.mkdir(parents=True, exist_ok=True)
    platform = BOARDS["ulx3s-85f"].platform_class()()
    (run_dir / "probe.il").write_text(rtlil.convert(probe, name="probe", platform=platform,
                                                    ports=[probe.din, probe.dout]))
    start = time.monotonic()
    print(f"yosys synth_ecp5 {ECP5_SYNTH_OPTS} of {name} ({cfg.name}) in {run_dir} ...", file=sys.stderr, flush=True)
    subprocess.run([tool_env()["YOSYS"], "-q", "-p", "read_rtlil probe.il; hierarchy -top probe; flatten; "
                    f"synth_ecp5 {ECP5_SYNTH_OPTS} -top probe; write_json probe.json"], cwd=run_dir, check=True)
    print(f"  {time.monotonic() - start:.0f} s", file=sys.stderr)
    return run_dir / "probe.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("netlist", nargs="?", help="yosys write_json output of synth_ecp5")
    parser.add_argument("--engine", help="synthesize this engine alone (as benchmarks/fmax.py --engine) "
                                         "and analyse it: controller, dma, matmul, requant, softmax, layernorm, "
                                         "gelu, add or core")
    parser.add_argument("--config", default="default", help="with --engine: the configuration (default)")
    parser.add_argument("--top", type=int, default=25, help="endpoints to list (default 25)")
    parser.add_argument("--group", action="store_true",
                        help="one line per (start, end) register pair: the worst")
    parser.add_argument("--paths", type=int, default=5, help="print the full path of the worst N")
    parser.add_argument("--placed", help="nextpnr's --write output for this netlist: net delays from "
                                         "the placement (0.25 ns + 0.1 ns per tile) instead of a fixed one")
    parser.add_argument("--routed", help="nextpnr's --report of this netlist routed, written with "
                                         "--detailed-timing-report: rank the endpoints by their routed "
                                         "arrival times; the paths shown are the model's worst into each")
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON")
    args = parser.parse_args()
    if args.placed and args.routed:
        parser.error("--placed and --routed are alternatives: give one")
    if args.engine:
        args.netlist = synthesize_engine(args.engine, args.config)
    elif not args.netlist:
        parser.error("give a netlist or --engine")
    with open(args.netlist) as f:
        netlist = json.load(f)
    net_delay = None
    if args.placed:
        with open(args.placed) as f:
            net_delay = placed_net_delay(placed_locations(json.load(f), netlist))
    if args.routed:
        with open(args.routed) as f:
            report = json.load(f)
        if "detailed_net_timings" not in report:
            parser.error(f"{args.routed} has no net timings: run nextpnr with --detailed-timing-report")
    endpoints, names, loops = analyse(netlist, net_delay)
    if args.routed:
        # nextpnr times the endpoints; the model's worst path into each shows where it starts.
        arrivals = routed_arrivals(report)
        # (A flip-flop's data input is DI, or M once nextpnr packs it apart from its LUT.)
        routed = []
        for _, cell, port, steps in endpoints:
            name = cell.rsplit(" ", 1)[-1]
            times = [arrivals[name, p] for p in ((port, "M") if port == "DI" else (port,)) if (name, p) in arrivals]
            if times:
                routed.append((max(times), cell, port, steps))
        endpoints = sorted(routed, key=lambda e: -e[0])
    if loops:
        print(f"warning: {len(loops)} nets on combinational loops were left out", file=sys.stderr)

    def label(bit):
        return names.get(bit, f"${bit}")

    rows, seen = [], set()
    for t, cell, port, steps in endpoints:
        key = _ends(label(steps[0][0]), cell, [label(b) for b, _ in steps]) if args.group else None
        if args.group and key in seen:
            continue
        seen.add(key)
        rows.append({"ns": round(t, 2), "mhz": round(1000 / t, 1), "levels": len(steps) - 1,
                     "from": label(steps[0][0]), "to_cell": cell, "to_port": port,
                     "path": [(label(b), round(a, 2)) for b, a in steps]})
        if len(rows) == args.top:
            break
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    if args.routed:
        print(f"{len(endpoints)} endpoints, by routed arrival (nextpnr); paths and their times: the model's, "
              f"net {NET} ns")
    else:
        nets = "from the placement" if args.placed else f"{NET} ns"
        print(f"{len(endpoints)} endpoints; model: net {nets}, LUT {LUT} ns, BRAM clk-to-out {BRAM_CLK_Q} ns")
    for row in rows:
        start, end = _ends(row["from"], row["to_cell"], [name for name, _ in row["path"]])
        print(f"{row['ns']:6.2f} ns {row['mhz']:6.1f} MHz {row['levels']:3d} lvl  {_short(start, 40):>40} -> "
              f"{_short(end, 40)}")
    for row in rows[:args.paths]:
        print(f"\n{row['ns']} ns:")
        for name, at in row["path"]:
            print(f"  {at:6.2f}  {name[:110]}")     # its source line and where in the hierarchy


if __name__ == "__main__":
    main()

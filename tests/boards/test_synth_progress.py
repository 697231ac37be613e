"""What `vitaccel estimate` says while its tools run and before a long one (boards/synth.py
ToolWatch, tool_phase, previous_seconds; vitaccel/jobs.py route_expectation): issue 26 item 10.
The tools are stood in for by their logs."""

import json

from vitaccel.boards import synth
from vitaccel.cli import main
from vitaccel.config import preset

YOSYS_LOG = """
5.13. Executing FSM pass (extract and optimize FSM).
5.13.1. Executing FSM_DETECT pass (finding FSMs in design).
5.44. Executing ABC9 pass.
"""
NEXTPNR_LOG = """Info: Packing IOs..
Info: Running Static placer...
Info: Running simulated annealing placer for refinement.
Info: Routing globals...
Info: Running router2...
Info: Running main router loop...
Info:     iter=1 wires=729343 overused=48322 overuse=57236 tmgfail=0 archfail=NA
Info:     iter={n} wires=772115 overused=0 overuse=0 tmgfail=5 archfail=NA
"""


def test_tool_phase_reads_the_pass_and_the_router_iteration():
    assert synth.tool_phase("yosys", "") == ("starting", None)
    assert synth.tool_phase("yosys", YOSYS_LOG) == ("ABC9 pass (step 5.44)", None)
    assert synth.tool_phase("nextpnr-ecp5", "Info: Packing IOs..\n") == ("packing", None)
    assert synth.tool_phase("nextpnr-ecp5", NEXTPNR_LOG.split("Info: Routing")[0])[0] == "placing (annealing)"
    phase, iteration = synth.tool_phase("nextpnr-ecp5", NEXTPNR_LOG.format(n=551))
    assert phase == "routing, iteration 551: 0 wires overused, 5 arcs failing timing" and iteration == (551, 0, 5)


def test_tool_watch_reports_elapsed_phase_and_time_left(tmp_path, monkeypatch):
    """Time left from an earlier run of the step, and for router2's timing rip-up from its
    iteration rate up to its last iteration."""
    now = [1000.0]
    monkeypatch.setattr(synth.time, "monotonic", lambda: now[0])
    lines = []
    (tmp_path / "top.rpt").write_text(YOSYS_LOG)
    watch = synth.ToolWatch(tmp_path, lines.append, expected={"synthesis": 100.0}, route=True)
    watch.step("yosys ...")
    now[0] += 40
    watch.report()
    assert lines[-1] == "yosys 0:40: ABC9 pass (step 5.44), ~1:00 left (an earlier run took 1:40)"
    now[0] += 80
    watch.report()
    assert lines[-1].endswith("longer than an earlier run (1:40)")

    watch.step("nextpnr-ecp5 ...")
    (tmp_path / "top.tim").write_text("Info: Running Static placer...\n")
    watch.report()
    (tmp_path / "top.tim").write_text("Info: iter=516 steplen=1.941773 a=260.386993\n" * 3)   # its first line gone
    watch.report()
    assert lines[-1] == "nextpnr-ecp5 0:00: placing (analytic)"
    (tmp_path / "top.tim").write_text(NEXTPNR_LOG.format(n=100))
    watch.report()
    now[0] += 10
    (tmp_path / "top.tim").write_text(NEXTPNR_LOG.format(n=200))
    watch.report()
    assert lines[-1] == ("nextpnr-ecp5 0:10: routing, iteration 200: 0 wires overused, 5 arcs failing timing, "
                         "at most ~2:10 left (timing rip-up stops at iteration 1500)")


def test_previous_seconds_and_route_expectation(tmp_path, monkeypatch):
    from vitaccel.jobs import route_expectation

    monkeypatch.setenv("VITACCEL_BUILD_DIR", str(tmp_path))
    cfg = preset("tiny")
    assert synth.previous_seconds("ulx3s-85f", cfg) == {}
    assert "tens of minutes for a design the size of `default`" in route_expectation("ulx3s-85f", cfg, 7200)
    run = tmp_path / "estimate" / f"ulx3s-85f-{cfg.slug}-0123456789abcdef"
    run.mkdir(parents=True)
    (run / "estimate.json").write_text(json.dumps({"config_slug": cfg.slug,
                                                   "seconds": {"synthesis": 61.0, "place_route": 1140.0}}))
    assert synth.previous_seconds("ulx3s-85f", cfg) == {"synthesis": 61.0, "place_route": 1140.0}
    said = route_expectation("ulx3s-85f", cfg, 3600)
    assert said.startswith("placing and routing tiny on ulx3s-85f with nextpnr: an earlier run of this config "
                           "took 19:00; stopped after 1:00:00 (--timeout)")


def test_estimate_routes_only_when_asked_and_says_how_long_first(monkeypatch, capsys):
    """By default estimate asks for a recorded routed estimate or nextpnr's placement (route=None,
    for the ULX3S's LiteX SoC too: litex_estimate.soc_estimate); --route says the expected time
    before it starts (a line that stays, not the spinner's); --route with --no-route is one line,
    exit status 2. The tools are stood in for (also the SoC's: a real one takes many minutes)."""
    from vitaccel.boards import litex_estimate

    board = "ulx3s-85f"
    calls = []
    measured = {"board": board, "part": "test", "config": "tiny", "fmax_mhz": 50.0, "fmax_source": "test",
                "resources": {}}

    def fake(board, cfg, **options):
        calls.append(options["route"])
        return measured

    def fake_soc(cfg, **options):
        calls.append(options["route"])
        return measured

    monkeypatch.setattr(synth, "estimate", fake)
    monkeypatch.setattr(litex_estimate, "soc_estimate", fake_soc)
    argv = ["estimate", "--board", board, "--config", "tiny", "--model", "tiny-digits"]
    assert main(argv) == 0
    assert main([*argv, "--no-route"]) == 0
    assert "placing and routing" not in capsys.readouterr().err
    assert main([*argv, "--route"]) == 0
    assert calls == [None, False, True]
    assert f"placing and routing tiny on {board} with nextpnr:" in capsys.readouterr().err
    assert main([*argv, "--route", "--no-route", "--json"]) == 2
    assert capsys.readouterr().err == "vitaccel: error: give --route or --no-route, not both\n"


def test_route_none_runs_the_placement_when_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("VITACCEL_BUILD_DIR", str(tmp_path))
    ran = []
    monkeypatch.setattr(synth, "_estimate_locked", lambda *a, route, place, **k: ran.append((route, place)) or "ran")
    assert synth.estimate("ulx3s-85f", preset("tiny"), route=None) == "ran"
    assert ran == [(False, True)]

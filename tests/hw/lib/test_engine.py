# amaranth: UnusedElaboratable=no
"""Engine's command opening: ready only when idle, empty commands do nothing, busy from the cycle
after acceptance to the command's last cycle, with or without a busy flip-flop; the statements
``started`` run once per command with work."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from vitaccel.config import AccelConfig
from vitaccel.hw.layernorm import LayerNormEngine, LayerNormUnit
from vitaccel.hw.lib import Engine
from vitaccel.hw.softmax import SoftmaxEngine, SoftmaxUnit


def _ticks(cfg, rows):
    return rows + 1


class CountingEngine(Engine):
    """Busy for ``rows + 1`` cycles of a command: one to start, ``rows`` counting."""

    busy_cycles = staticmethod(_ticks)

    def __init__(self, cfg, busy_register):
        self._busy_register = busy_register
        super().__init__(cfg)

    def elaborate(self, platform):
        m = Module()
        instr = self.cmd.payload.matmul
        left = Signal.like(instr.rows)
        self.runs = Signal(4)
        with self.command_fsm(m, work=instr.rows != 0, taken=[left.eq(instr.rows)], start="START",
                              started=[self.runs.eq(self.runs + 1)], busy_register=self._busy_register) as fsm:
            with m.State("START"):
                m.next = "COUNT"
            with m.State("COUNT"):
                m.d.sync += left.eq(left - 1)
                with m.If(left == 1):
                    fsm.finish()
        return m


@pytest.mark.parametrize("busy_register", [False, True])
def test_busy_window(busy_register):
    dut = CountingEngine(AccelConfig(), busy_register)
    assert dut.cycles(3) == 4

    async def bench(ctx):
        for rows in (3, 0, 1):
            ctx.set(dut.cmd.payload.matmul.rows, rows)
            await ctx.tick()              # the payload holds from the cycle before valid
            ctx.set(dut.cmd.valid, 1)
            assert ctx.get(dut.cmd.ready) and not ctx.get(dut.busy)
            await ctx.tick()
            ctx.set(dut.cmd.valid, 0)
            busy = 0
            for _ in range(10):
                busy += ctx.get(dut.busy)
                assert ctx.get(dut.cmd.ready) != ctx.get(dut.busy)
                await ctx.tick()
            assert busy == (dut.cycles(rows) if rows else 0), rows
        assert ctx.get(dut.runs) == 2

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("component", [SoftmaxUnit, SoftmaxEngine, LayerNormUnit, LayerNormEngine])
def test_rejects_what_is_not_a_config(component):
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        component("tiny")

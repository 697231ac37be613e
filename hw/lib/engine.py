"""The opening every engine shares: its members, its cycle formula, and the IDLE state that takes
a command."""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from ..interfaces import checked_config, engine_members

__all__ = ["Engine", "CommandFSM"]


class CommandFSM:
    """The engine's FSM as :meth:`Engine.command_fsm` opened it."""

    def __init__(self, m: Module, fsm, busy, accepted):
        self._m = m
        self._busy = busy
        #: The Amaranth FSM (for ``ongoing``).
        self.fsm = fsm
        #: High in the cycle a command with work is accepted (combinational).
        self.accepted = accepted

    def ongoing(self, state: str):
        """The FSM is in ``state`` in this cycle."""
        return self.fsm.ongoing(state)

    def finish(self):
        """End the command: back to IDLE in the next cycle, ``busy`` low from it. Call it in the
        state and under the condition of the command's last cycle."""
        if self._busy is not None:
            self._m.d.sync += self._busy.eq(0)
        self._m.next = "IDLE"


class Engine(wiring.Component):
    """An engine: executes one instruction at a time from ``cmd`` on the core's memories.

    Parameters
    ----------
    cfg : AccelConfig
        Validated here (:func:`~vitaccel.hw.interfaces.checked_config`).
    *ports : str
        The memory ports it uses (:func:`~vitaccel.hw.interfaces.engine_members`).

    Attributes
    ----------
    cmd : In(engine_cmd_signature())
        The instruction. ``cmd.ready`` is high only when idle; a command with no work (the
        engine's ``work`` decode low, e.g. ``rows == 0``) is accepted and does nothing: ``busy``
        stays low.
    busy : Out(1)
        High from the cycle after a command with work is accepted to its last cycle (the
        engine's :meth:`cycles`).

    A subclass sets :attr:`busy_cycles`, its module's cycle formula (``cfg`` first), which
    :meth:`cycles` applies to this engine's config.
    """

    #: The engine's cycle formula, ``busy_cycles(cfg, *args)``: the cycles ``busy`` is high.
    busy_cycles = None

    def __init__(self, cfg, *ports: str):
        self._cfg = checked_config(cfg)
        super().__init__(engine_members(self._cfg, *ports))

    def cycles(self, *args) -> int:
        """:attr:`busy_cycles` for this engine's config: the busy cycles of a command."""
        return type(self).busy_cycles(self._cfg, *args)

    @contextmanager
    def command_fsm(self, m: Module, *, work, taken, start: str, started=(), busy_register: bool = False,
                    busy=None):
        """Open the engine's FSM with its IDLE state; yields a :class:`CommandFSM`. Add the
        command's states inside the ``with`` block and leave the last with
        :meth:`CommandFSM.finish`; ``busy`` is driven when the block closes.

        In IDLE, ``cmd.ready`` is high and the statements ``taken`` (the command's fields into
        the engine's registers) run in every cycle, with no enable from the handshake, whose
        ``valid`` comes late from the controller's checks: the fields of the accepted command
        are the last taken, and nothing reads them while idle. ``work`` (whether the payload has
        work) is registered a cycle ahead (``nonempty``), since the payload holds from the cycle
        before ``valid``; acceptance of a command with work moves the state to ``start``, runs
        the statements ``started`` and sets ``busy``'s flip-flop: a handful of loads behind
        ``valid`` and a register.

        ``busy_register``: ``busy`` is a flip-flop of its own (set on acceptance, cleared by
        :meth:`CommandFSM.finish`), for an engine whose ``busy`` the core selects memory ports
        with (hw/core.py); otherwise it is ``~ongoing("IDLE")``. The same function of the state
        either way.

        ``busy``: a signal of the engine's own that drives ``busy`` instead, for an engine whose work
        outlasts its FSM (a pipeline that drains while IDLE already takes the next command).
        """
        nonempty = Signal(name="nonempty")
        m.d.sync += nonempty.eq(work)
        accepted = Signal(name="accepted")
        own_busy = busy
        busy = Signal(name="busy") if busy_register and own_busy is None else None
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                m.d.sync += taken
                with m.If(self.cmd.valid & nonempty):
                    m.d.comb += accepted.eq(1)
                    m.d.sync += started
                    if busy is not None:
                        m.d.sync += busy.eq(1)
                    m.next = start
            yield CommandFSM(m, fsm, busy, accepted)
        if own_busy is not None:
            m.d.comb += self.busy.eq(own_busy)
        else:
            m.d.comb += self.busy.eq(busy if busy is not None else ~fsm.ongoing("IDLE"))

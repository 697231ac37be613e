"""Signatures shared by the hardware units: the external memory port, the CSR bus, the engine
command stream and the shapes of the on-chip memories. All widths come from :class:`AccelConfig`.

Conventions (see docs/architecture.md):

- An engine receives its instruction on ``cmd: In(engine_cmd_signature())``: a valid/ready stream
  whose payload is the whole :data:`vitaccel.isa.Instruction`. The payload holds still from the
  cycle before ``valid`` rises until the command is accepted (the controller's payload registers
  follow an instruction register that holds from DECODE on), so an engine may act on decodes of
  the payload registered a cycle ahead (whether the command is empty, say) rather than on the
  payload itself. It raises ``cmd.ready`` only when idle, and holds ``busy: Out(1)`` high from the
  cycle after it accepts a command until its last write to any memory has been presented
  (external writes: accepted by the port).
- A unit that reads an on-chip memory has a member ``In(memory.ReadPort.Signature(...))``; one that
  writes has ``In(memory.WritePort.Signature(...))``. The core's shared memories are pipelined
  (:class:`vitaccel.hw.memories.SharedMemory`): data for the address presented with ``en`` in cycle
  t is on ``data`` in cycle ``t + READ_LATENCY`` and holds while no read is presented; a write
  presented in cycle t is seen by reads presented from cycle t+1 on.
"""

from amaranth.hdl import signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.isa import Instruction

__all__ = [
    "MemoryPortSignature", "CsrBusSignature", "engine_cmd_signature",
    "spad_row", "acc_row", "local_addr_width",
    "local_port_signature", "CSR", "checked_config", "engine_members",
]


class MemoryPortSignature(wiring.Signature):
    """External memory port, from the master's side (the accelerator drives commands).

    A command is transferred when ``cmd_valid & cmd_ready``. A write (``cmd_write=1``) stores the
    whole ``cmd_wdata`` word at byte address ``cmd_addr`` (a multiple of the word size in bytes; byte
    ``k`` of the word is ``cmd_wdata[8k:8k+8]``) and is complete once accepted: it gets no response.
    A read returns one ``rsp_data`` word, transferred when ``rsp_valid & rsp_ready``; responses come
    back in the order of their commands, after any latency.
    """

    def __init__(self, addr_bits: int, data_bits: int):
        self._addr_bits = addr_bits
        self._data_bits = data_bits
        super().__init__({
            "cmd_valid": Out(1),
            "cmd_ready": In(1),
            "cmd_addr": Out(addr_bits),
            "cmd_write": Out(1),
            "cmd_wdata": Out(data_bits),
            "rsp_valid": In(1),
            "rsp_ready": Out(1),
            "rsp_data": In(data_bits),
        })

    @property
    def addr_bits(self):
        return self._addr_bits

    @property
    def data_bits(self):
        return self._data_bits

    def __eq__(self, other):
        return (isinstance(other, MemoryPortSignature) and self.addr_bits == other.addr_bits
                and self.data_bits == other.data_bits)

    def __repr__(self):
        return f"MemoryPortSignature({self.addr_bits}, {self.data_bits})"


class CsrBusSignature(wiring.Signature):
    """Control/status register bus, from the host's side. 32-bit registers at word indices
    :class:`CSR`. A write happens on a cycle with ``w_en``; ``r_data`` shows the register at ``addr``
    in the same cycle (combinational read)."""

    def __init__(self):
        super().__init__({
            "addr": Out(4),
            "w_en": Out(1),
            "w_data": Out(32),
            "r_data": In(32),
        })


class CSR:
    """Register map of the CSR bus (word indices)."""
    CTRL = 0        #: W: bit 0 starts a run at PROG_ADDR (ignored while busy).
    STATUS = 1      #: R: bit 0 busy, bit 1 done, bits 15:8 error code (vitaccel.isa.ErrorCode).
    PROG_ADDR = 2   #: RW: byte address of the first instruction.
    CYCLES_LO = 3   #: R: cycles from start to done (low word).
    CYCLES_HI = 4   #: R: (high word).
    INSTRET = 5     #: R: instructions executed (END included).
    PC = 6          #: R: byte address of the instruction being executed, or that failed.
    ID = 7          #: R: 0x56495441 ("VITA").
    ID_VALUE = 0x56495441


def engine_cmd_signature() -> stream.Signature:
    return stream.Signature(Instruction)


def local_addr_width(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


def spad_row(cfg: AccelConfig) -> data.ArrayLayout:
    """A scratchpad row: ``cols`` int8 values, element j in bits [8j, 8j+8)."""
    return data.ArrayLayout(signed(cfg.data_width), cfg.cols)


def acc_row(cfg: AccelConfig) -> data.ArrayLayout:
    """An accumulator (or parameter) row: ``cols`` int32 values, element j in bits [32j, 32j+32)."""
    return data.ArrayLayout(signed(cfg.acc_width), cfg.cols)


def local_port_signature(cfg: AccelConfig, port: str) -> wiring.Signature:
    """The signature of an on-chip memory port, from the memory's side (what
    ``Memory.read_port()`` or ``write_port()`` returns): ``port`` is ``{memory}_{side}``, memory
    ``spad`` (rows :func:`spad_row`), ``acc`` or ``param`` (rows :func:`acc_row`), side ``rd``
    (a ``ReadPort``) or ``wr`` (a ``WritePort``)."""
    memories = {"spad": (cfg.spad_rows, spad_row), "acc": (cfg.acc_rows, acc_row), "param": (cfg.param_rows, acc_row)}
    sides = {"rd": memory.ReadPort, "wr": memory.WritePort}
    name, _, side = port.partition("_")
    if name not in memories or side not in sides:
        raise ValueError(f"port must be one of spad_rd, spad_wr, acc_rd, acc_wr, param_rd, param_wr, not {port!r}")
    depth, row = memories[name]
    return sides[side].Signature(addr_width=local_addr_width(depth), shape=row(cfg))


def checked_config(cfg) -> AccelConfig:
    """``cfg`` validated; a :class:`TypeError` for anything that is not an :class:`AccelConfig`.
    Every component's constructor starts with it, so a bad parameter fails before elaboration."""
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"cfg must be an AccelConfig, not {cfg!r}")
    return cfg.validate()


def engine_members(cfg: AccelConfig, *ports: str) -> dict:
    """The members of an engine: ``cmd``, ``busy`` and the named memory ports (``spad_rd``,
    ``spad_wr``, ``acc_rd``, ``acc_wr``, ``param_rd``, ``param_wr``), each ``In`` its
    :func:`local_port_signature`."""
    return {"cmd": In(engine_cmd_signature()), "busy": Out(1),
            **{port: In(local_port_signature(cfg, port)) for port in ports}}

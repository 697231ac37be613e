"""Signatures shared by the hardware units: the CSR bus, the engine command stream and the shapes
of the on-chip memories (the AXI4 ports are in ``hw/axi.py``). All widths come from :class:`AccelConfig`.

Conventions (see docs/architecture.md):

- An engine receives its instruction on ``cmd: In(engine_cmd_signature())``: a valid/ready stream
  whose payload is the whole :data:`vitaccel.isa.Instruction`. The payload holds still from the
  cycle before ``valid`` rises until the command is accepted (the controller's payload registers
  follow an instruction register that holds from DECODE on), so an engine may act on decodes of
  the payload registered a cycle ahead (whether the command is empty, say) rather than on the
  payload itself. It raises ``cmd.ready`` only when idle, and holds ``busy: Out(1)`` high from the
  cycle after it accepts a command until its last write to any memory has been presented
  (external writes: answered on the AXI4 B channel).
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
    "CSR_INDEX_BITS", "CsrBusSignature", "engine_cmd_signature",
    "spad_row", "acc_row", "local_addr_width",
    "local_port_signature", "CSR", "CSR_DOC", "csr_map", "csr_map_markdown", "checked_config", "engine_members",
]


#: Bits of a CSR index (:class:`CSR`).
CSR_INDEX_BITS = 4


class CsrBusSignature(wiring.Signature):
    """Control/status register bus, from the host's side. 32-bit registers at word indices
    :class:`CSR`. A write happens on a cycle with ``w_en``; ``r_data`` shows the register at ``addr``
    in the same cycle (combinational read). The core serves it to the outside as AXI4-Lite
    (:class:`vitaccel.hw.axi.AxiLiteCsr`)."""

    def __init__(self):
        super().__init__({
            "addr": Out(CSR_INDEX_BITS),
            "w_en": Out(1),
            "w_data": Out(32),
            "r_data": In(32),
        })


class CSR:
    """Register map of the CSR bus (word indices; :data:`CSR_DOC` says what each holds). Over
    AXI4-Lite, register ``k`` is at byte offset ``4 * k``."""
    CTRL = 0
    STATUS = 1
    PROG_ADDR = 2
    CYCLES_LO = 3
    CYCLES_HI = 4
    INSTRET = 5
    PC = 6
    ID = 7
    ID_VALUE = 0x56495441


#: Access and meaning of each register of :class:`CSR` (the CSR map's single description).
CSR_DOC = {
    "CTRL": ("W", "bit 0: start a run at PROG_ADDR (ignored while busy)"),
    "STATUS": ("R", "bit 0 busy, bit 1 done, bits 15:8 error code (vitaccel.isa.ErrorCode)"),
    "PROG_ADDR": ("RW", "byte address of the first instruction (a multiple of 16)"),
    "CYCLES_LO": ("R", "cycles from start to done, low word"),
    "CYCLES_HI": ("R", "cycles from start to done, high word"),
    "INSTRET": ("R", "instructions executed (END included)"),
    "PC": ("R", "byte address of the instruction being executed, or that failed"),
    "ID": ("R", 'reads 0x56495441 ("VITA")'),
}


def csr_map() -> dict:
    """The CSR map as data (what ``vitaccel generate`` writes as ``csr_map.json``): the bus, its
    widths, and per register its name, byte offset, access, reset value (the constant ID only)
    and description, in offset order."""
    from .axi import CSR_ADDR_BITS

    registers = sorted((value, name) for name, value in vars(CSR).items()
                       if name.isupper() and isinstance(value, int) and name != "ID_VALUE")
    return {
        "bus": "AXI4-Lite", "data_bits": 32, "addr_bits": CSR_ADDR_BITS, "port_prefix": "s_axi_",
        "registers": [{"name": name, "offset": 4 * index, "access": CSR_DOC[name][0],
                       "reset": CSR.ID_VALUE if name == "ID" else None, "description": CSR_DOC[name][1]}
                      for index, name in registers],
    }


def csr_map_markdown() -> str:
    """:func:`csr_map` as a Markdown table."""
    lines = ["| offset | register | access | description |", "| --- | --- | --- | --- |"]
    lines += [f"| {reg['offset']:#04x} | {reg['name']} | {reg['access']} | {reg['description']} |"
              for reg in csr_map()["registers"]]
    return "\n".join(lines) + "\n"


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

"""The on-chip memory port signatures: widths from the config, a clear error for a bad port name."""

import pytest
from amaranth.lib import memory

from vitaccel.config import preset
from vitaccel.hw.interfaces import acc_row, local_addr_width, local_port_signature, spad_row

CFG = preset("tiny")


@pytest.mark.parametrize("port, kind, depth, row", [
    ("spad_rd", memory.ReadPort, CFG.spad_rows, spad_row(CFG)),
    ("spad_wr", memory.WritePort, CFG.spad_rows, spad_row(CFG)),
    ("acc_rd", memory.ReadPort, CFG.acc_rows, acc_row(CFG)),
    ("acc_wr", memory.WritePort, CFG.acc_rows, acc_row(CFG)),
    ("param_rd", memory.ReadPort, CFG.param_rows, acc_row(CFG)),
    ("param_wr", memory.WritePort, CFG.param_rows, acc_row(CFG)),
])
def test_port_signature(port, kind, depth, row):
    assert local_port_signature(CFG, port) == kind.Signature(addr_width=local_addr_width(depth), shape=row)


@pytest.mark.parametrize("port", ["spad", "spad_rw", "dram_rd", ""])
def test_bad_port_name(port):
    with pytest.raises(ValueError, match=f"port must be one of spad_rd, .*, not {port!r}"):
        local_port_signature(CFG, port)

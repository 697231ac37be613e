"""The hardware idioms the engines share, each written once, each there for timing.

- :func:`delayed`: a value delayed by N cycles through plain registers (a read's strobe and
  metadata travelling alongside it).
- :func:`fanned_out`: N registered copies of a value, kept apart by synthesis, for a wide fan-out.
- :func:`read_room`: the registered flag "a read-ahead FIFO has room", without the count's adder
  behind it.
- :class:`RegisteredFIFO`: a FIFO whose outputs are flip-flops, with ``SyncFIFO``'s ports and
  ``FIFOInterface``'s ``w_stream``/``r_stream``.
- :class:`Mult18x18D`, :func:`is_ecp5`: a signed multiply on one ECP5 DSP with its registers
  inside (a behavioural model without a platform).
- :func:`one_hot_select`: the value a one-hot register picks, an AND-OR.
- :class:`RowGatherer`: a row gathered beat by beat under a one-hot position, held registers
  enabled by flip-flops.
- :func:`radix4_products`, :func:`radix4_pair_sums`: a multiply as radix-4 digit multiplexers
  over registered multiples, summed in pairs.
- :func:`narrowed`: a signed value saturated to fewer bits chosen at run time, by a bit-range test.
- :class:`Engine`: an engine's members, cycle formula and IDLE state (registered ``nonempty``,
  fields taken in every idle cycle, ``busy``).
"""

from .dsp import Mult18x18D, is_ecp5
from .engine import CommandFSM, Engine
from .fifo import RegisteredFIFO
from .radix4 import radix4_pair_sums, radix4_products
from .registers import delayed, fanned_out, read_room
from .saturate import narrowed
from .select import RowGatherer, one_hot_select

__all__ = ["delayed", "fanned_out", "read_room", "RegisteredFIFO", "Mult18x18D", "is_ecp5",
           "one_hot_select", "RowGatherer", "radix4_products", "radix4_pair_sums", "Engine", "CommandFSM",
           "narrowed"]

"""The ECP5 DSP wrapper: a signed multiply on one MULT18X18D with its registers inside."""

from amaranth.hdl import C, Cat, ClockSignal, Instance, Module, ResetSignal, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Mult18x18D", "is_ecp5"]


def is_ecp5(platform) -> bool:
    """Whether ``platform`` is an ECP5 platform: where :class:`Mult18x18D` instances are used."""
    from amaranth.vendor import LatticeECP5Platform

    return isinstance(platform, LatticeECP5Platform)


class Mult18x18D(wiring.Component):
    """A signed ``a_bits x b_bits`` multiply (each at most 18) on one ECP5 MULT18X18D, with the
    product register in the DSP block.

    Contract: ``p`` in cycle ``t + 1`` is ``a * b`` of cycle ``t`` (signed, exact, ``a_bits +
    b_bits`` bits); reset clears it. With ``registered_inputs`` the DSP's operand registers are
    used too: ``p`` in cycle ``t + 2`` is ``a * b`` of cycle ``t``. Every register of the block
    uses the same clock, enable (always) and reset, so DSPs that share a slice's control signals
    can always be paired.

    Elaborated for a platform (synthesis), this is the primitive with ``REG_OUTPUT`` on ``CLK0``,
    synchronous reset ``RST0`` and sign-extended signed inputs, unregistered or (``REG_INPUTA``,
    ``REG_INPUTB`` on ``CLK0``, ``CE0``, ``RST0``) registered (Lattice TN1267, ECP5 sysDSP Usage
    Guide). yosys never moves a fabric register into the DSP; with the product
    register inside, the multiplier's output needs no route to the fabric within the cycle. Without
    a platform (Amaranth's simulator cannot run an ``Instance``) it is a behavioural model of that
    configuration. Instantiated DSPs are the only ones an ECP5 build uses: it synthesizes with
    ``-nodsp`` (:data:`vitaccel.boards.build.ECP5_SYNTH_OPTS`), every other multiply in LUTs.
    """

    WIDTH = 18

    def __init__(self, a_bits: int = 8, b_bits: int = 8, *, registered_inputs: bool = False,
                 site: str | None = None):
        if not (1 <= a_bits <= self.WIDTH and 1 <= b_bits <= self.WIDTH):
            raise ValueError(f"a MULT18X18D multiplies at most 18 x 18 bits, not {a_bits} x {b_bits}")
        self._registered_inputs = registered_inputs
        #: The DSP site (nextpnr BEL name, ``BEL`` attribute) the block is placed at, or None.
        self.site = site
        super().__init__({"a": In(signed(a_bits)), "b": In(signed(b_bits)), "p": Out(signed(a_bits + b_bits))})

    def elaborate(self, platform):
        m = Module()
        registered = self._registered_inputs
        if platform is None:
            a, b = self.a, self.b
            if registered:
                a, b = Signal.like(self.a, name="a_reg"), Signal.like(self.b, name="b_reg")
                m.d.sync += [a.eq(self.a), b.eq(self.b)]
            m.d.sync += self.p.eq(a * b)
            return m

        def bits(prefix, value):
            wide = Cat(value, *([value[-1]] * (self.WIDTH - len(value))))
            return {f"i_{prefix}{k}": wide[k] for k in range(self.WIDTH)}

        product = Signal(36)
        m.submodules.dsp = Instance(
            "MULT18X18D",
            **({"a_BEL": self.site} if self.site else {}),
            **({"p_REG_INPUTA_CLK": "CLK0", "p_REG_INPUTA_CE": "CE0", "p_REG_INPUTA_RST": "RST0",
                "p_REG_INPUTB_CLK": "CLK0", "p_REG_INPUTB_CE": "CE0", "p_REG_INPUTB_RST": "RST0"}
               if registered else {"p_REG_INPUTA_CLK": "NONE", "p_REG_INPUTB_CLK": "NONE"}),
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_RESETMODE="SYNC", p_GSR="DISABLED", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
            **bits("A", self.a), **bits("B", self.b), **bits("C", C(0, 18)),
            i_SIGNEDA=C(1, 1), i_SIGNEDB=C(1, 1), i_SOURCEA=C(0, 1), i_SOURCEB=C(0, 1),
            i_CLK0=ClockSignal(), i_CE0=C(1, 1), i_RST0=ResetSignal(),
            **{f"o_P{k}": product[k] for k in range(36)},
        )
        m.d.comb += self.p.eq(product[:len(self.p)])
        return m

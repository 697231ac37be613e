"""Benchmark: the 16-bit residual stream (``AccelConfig.residual16``, I-ViT, issue 23 item 5).

Cycles of the recipe ``base`` with an 8-bit residual stream on the config against ``base`` with
``--residual-bits 16`` on the config with ``residual16`` (both with ``layernorm = "i_layernorm"``
and ``vector_lanes = 6``, which the feature needs on a 12-column build: a scratchpad row holds whole
beats of int16 lanes; tiny-digits also bit-exact through the ISA simulator; DeiT-Tiny with random
weights), and with ``--cost`` the yosys cells of the ADD and LayerNorm engines and of the board top
with and without the feature (benchmarks/feature_bench.py says how).

    python benchmarks/residual16.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import sys

from feature_bench import R16, main

if __name__ == "__main__":
    sys.exit(main(R16, "residual16.py"))

"""Benchmark: activations below 8 bits (``AccelConfig.narrow_activations``, issue 23).

Cycles of the recipe ``base`` at W8A8 on the config against ``base`` at W4A4 on the config with
``narrow_activations`` (tiny-digits also bit-exact through the ISA simulator; DeiT-Tiny with random
weights), and with ``--cost`` the yosys cells of the requant and LayerNorm engines and of the board
top with and without the feature (benchmarks/feature_bench.py says how).

    python benchmarks/low_bit_activations.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import sys

from feature_bench import NARROW, main

if __name__ == "__main__":
    sys.exit(main(NARROW, "low_bit_activations.py"))

"""Benchmark: twin-uniform outputs (PTQ4ViT, ``AccelConfig.twin_uniform``, issue 23 item 2).

Cycles of the recipe ``base`` on the config against ``ptq4vit`` on the config with
``twin_uniform`` (tiny-digits also bit-exact through the ISA simulator; DeiT-Tiny with random
weights), and with ``--cost`` the yosys cells of the matmul and softmax engines and of the board top
with and without the feature (benchmarks/feature_bench.py says how).

    python benchmarks/twin_uniform.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import sys

from feature_bench import TWIN, main

if __name__ == "__main__":
    sys.exit(main(TWIN, "twin_uniform.py"))

"""Benchmark: log2 attention (FQ-ViT Log-Int-Softmax, ``AccelConfig.log2_attention``, issue 23 item 1).

Cycles of the recipe ``base`` on the config against ``fqvit`` on the config with
``log2_attention`` (tiny-digits also bit-exact through the ISA simulator; DeiT-Tiny with random
weights), and with ``--cost`` the yosys cells of the matmul and softmax engines and of the board top
with and without the feature (benchmarks/feature_bench.py says how).

    python benchmarks/log2_attention.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import sys

from feature_bench import LOG2, main

if __name__ == "__main__":
    sys.exit(main(LOG2, "log2_attention.py"))

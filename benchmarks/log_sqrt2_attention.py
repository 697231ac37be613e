"""Benchmark: RepQ-ViT's log-sqrt2 attention (``AccelConfig.log_sqrt2_attention``, issue 23).

Cycles of the recipe ``base`` on the config against ``repq`` on the config with
``log_sqrt2_attention`` (both with ``layernorm = "i_layernorm"``, which repq needs; tiny-digits also
bit-exact through the ISA simulator; DeiT-Tiny with random weights), and with ``--cost`` the yosys
cells of the matmul and softmax engines and of the board top with and without the feature
(benchmarks/feature_bench.py says how).

    python benchmarks/log_sqrt2_attention.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import sys

from feature_bench import LSQ2, main

if __name__ == "__main__":
    sys.exit(main(LSQ2, "log_sqrt2_attention.py"))

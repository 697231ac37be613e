"""benchmarks/overlap_headroom.py: idle array cycles charged to layer kinds, and the ceilings."""

from vitaccel.timeline import Interval, Timeline


def test_layer_kinds(benchmark_module):
    kind = benchmark_module("overlap_headroom").layer_kind
    assert [kind(n) for n in ("blocks.3.attn.1", "blocks.0.qkv", "blocks.11.norm2", "head", "")] == \
        ["attn", "qkv", "norm2", "head", "?"]


def test_idle_cycles_and_ceilings(benchmark_module):
    # 100 cycles: qkv 0..40 (array busy 10..40), norm1 40..60 (array idle), attn 60..100 (busy 60..80).
    intervals = (Interval("dma", 0, 10, "load", 0, "blocks.0.qkv"), Interval("matmul", 10, 40, "matmul", 1, "blocks.0.qkv"),
                 Interval("layernorm", 40, 60, "layernorm", 2, "blocks.0.norm1"),
                 Interval("matmul", 60, 80, "matmul", 3, "blocks.0.attn.0"),
                 Interval("softmax", 80, 100, "softmax", 4, "blocks.0.attn.0"))
    result = benchmark_module("overlap_headroom").headroom(Timeline(intervals, 100, "perf"), macs=50 * 4, array_macs=4)
    assert result["matmul_busy_share"] == 0.5
    assert {row["kind"]: row["array_idle"] for row in result["by_kind"]} == {"qkv": 10, "norm1": 20, "attn": 20}
    # Hiding qkv's 10 idle cycles, then attn's 20, then norm1's 20: 90, 70, 50 cycles.
    assert [row["cycles"] for row in result["ceilings"]] == [90, 70, 50, 50]
    assert result["ceilings"][-1]["utilization"] == 1.0

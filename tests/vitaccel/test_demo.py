"""`vitaccel demo`, end to end as users run it (on the `tiny` config to keep CI short)."""

import json

from vitaccel.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--config", "tiny", "--images", "2", "--board", "arty-a7-35", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] is True and report["rtl_images"] == 2
    assert report["int_top1"] > 0.97 and report["fp_top1"] > 0.98
    assert report["cycles"] > 0 and report["perf_error"] == 0.0
    text = (out / "report.md").read_text()
    assert "RTL bit-exact on 2 images" in text and "| yes |" in text
    assert report["board"]["fits"] is True and "fit on arty-a7-35 | fits" in text
    assert (out / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""The benchmark runs on a tiny configuration and writes its JSON (no time is asserted)."""
import json

from helpers import PYTHON, run


def test_step_time_benchmark_writes_json(tmp_path):
    run([PYTHON, "-m", "bench.step_time", "--ops", "none,nonlocal", "--width", "4", "--batch", "4",
         "--attack-iter", "1", "--repeats", "1", "--json-out", tmp_path / "b.json"], timeout=300)
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [r["arch"] for r in rows] == ["S14-w4", "S14-w4-nonlocal"]
    assert all(r["seconds_per_step"] > 0 and r["images_per_second"] > 0 for r in rows)

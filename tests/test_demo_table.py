"""The demo's table (scripts/demo_table.py): PGD-100 beside PGD-10 on the same 500 images, and
AutoAttack's APGD-CE + APGD-T beside the paper's targeted PGD."""
import json

from helpers import PYTHON, REPO, run


def _eval(path, results, op):
    path.parent.mkdir(parents=True, exist_ok=True)
    white_box = {k: {"top1_error": 1 - acc, "num_images": n, "attack_success": succ}
                 for k, (acc, n, succ) in results.items()}
    path.write_text(json.dumps({"white_box": white_box, "arch": {"denoise": {"op": op}}}))


def test_demo_table_compares_attacks_on_the_same_images(tmp_path):
    _eval(tmp_path / "baseline" / "eval-pgd10.json", {"clean": (0.843, 2000, 0.0), "pgd10": (0.789, 2000, 0.069)},
          None)
    _eval(tmp_path / "baseline" / "eval-500.json", {"pgd10": (0.81, 500, 0.05), "pgd100": (0.792, 500, 0.084)}, None)
    _eval(tmp_path / "baseline" / "eval-aa.json", {"clean": (0.85, 500, 0.0), "autoattack": (0.55, 500, 0.3)}, None)
    # A model whose 500-image evaluation has not run yet shows '-' there, not numbers of other images.
    _eval(tmp_path / "denoise" / "eval-pgd10.json", {"clean": (0.84, 2000, 0.0), "pgd10": (0.795, 2000, 0.073)},
          "nonlocal-dot")
    out = run([PYTHON, REPO / "scripts" / "demo_table.py", tmp_path]).stdout
    baseline = next(line for line in out.splitlines() if line.startswith("baseline"))
    # Wilson's interval of 1686 of 2000 and of 275 of 500
    assert "84.3 [82.6, 85.8]" in baseline and "78.9 (6.9)" in baseline and "81.0 -> 79.2" in baseline
    assert "55.0 [50.6, 59.3] (n=500)" in baseline
    assert baseline.rstrip().endswith("none")
    denoise = next(line for line in out.splitlines() if line.startswith("denoise"))
    assert "- -> -" in denoise and denoise.rstrip().endswith("nonlocal-dot")
    assert "APGD-CE + APGD-T" in out

"""Print the demo's table from the eval JSON files under a directory."""
import json
import os
import sys


def main(out):
    rows = []
    for name in sorted(os.listdir(out)):
        results = {}
        for part in ("eval-pgd10.json", "eval-pgd100.json"):
            path = os.path.join(out, name, part)
            if os.path.exists(path):
                with open(path) as f:
                    doc = json.load(f)
                results.update(doc.get("white_box", {}))
                arch = doc["arch"]
        if results:
            rows.append((name, arch, results))
    print("\nFashion-MNIST, targeted PGD at epsilon 25.5/255 (accuracy = 100 - top-1 error; +- 95% CI)")
    print("%-10s %-22s %-22s %-22s %-22s" % ("model", "clean acc %", "PGD-10 acc % (succ %)",
                                             "PGD-100 acc % (succ %)", "denoising"))
    for name, arch, r in rows:
        def cell(key, success=True):
            if key not in r:
                return "-"
            acc = 100 * (1 - r[key]["top1_error"])
            s = "%.1f +- %.1f (n=%d)" % (acc, 100 * r[key]["top1_error_ci95"], r[key]["num_images"])
            if success:
                s = "%.1f (%.1f)" % (acc, 100 * r[key]["attack_success"])
            return s
        den = arch["denoise"]["op"] or "none"
        print("%-10s %-22s %-22s %-22s %-22s" % (name, cell("clean", False), cell("pgd10"), cell("pgd100"), den))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")

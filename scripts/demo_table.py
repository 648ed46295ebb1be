"""Print the demo's table from the eval JSON files under a directory."""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from evaluation.stats import format_rate  # noqa: E402

# (file, images): clean and PGD-10 on the first 2000 test images; PGD-10 and PGD-100 again on
# the first 500, where the drop from PGD-10 to PGD-100 is measured on the same images; and
# AutoAttack's APGD-CE followed by APGD-T on the first AA_IMAGES, the figure to publish.
AA_IMAGES = 200
PARTS = (("eval-pgd10.json", 2000), ("eval-500.json", 500), ("eval-aa.json", AA_IMAGES))


def main(out):
    rows = []
    for name in sorted(os.listdir(out)):
        results, arch = {}, None
        for part, _ in PARTS:
            path = os.path.join(out, name, part)
            if os.path.exists(path):
                with open(path) as f:
                    doc = json.load(f)
                results[part] = doc.get("white_box", {})
                arch = doc["arch"]
        if results:
            rows.append((name, arch, results))
    print("\nFashion-MNIST at epsilon 25.5/255: accuracy % = 100 - top-1 error, [Wilson 95% interval]")
    print("  the paper's protocol: targeted PGD (success: the target reached); AutoAttack: untargeted APGD-CE, then")
    print("  APGD-T on the images still standing (the robust accuracy to publish; docs/DEMO.md)")
    header = ("model", "clean (n=2000)", "targeted PGD-10 (succ)", "first 500: PGD-10 -> PGD-100",
              "APGD-CE + APGD-T", "denoising")
    print("%-10s %-24s %-23s %-30s %-28s %-14s" % header)
    for name, arch, r in rows:
        def value(part, key):
            res = r.get(part, {}).get(key)
            return None if res is None else (100 * (1 - res["top1_error"]), res)

        def cell(part, key, ci=False, success=False, count=False):
            v = value(part, key)
            if v is None:
                return "-"
            acc, res = v
            if ci:
                text = format_rate(res["top1_error"], res["num_images"], complement=True)
                return text + (" (n=%d)" % res["num_images"] if count else "")
            return "%.1f (%.1f)" % (acc, 100 * res["attack_success"]) if success else "%.1f" % acc
        first, second, third = (p for p, _ in PARTS)
        same = "%s -> %s" % (cell(second, "pgd10"), cell(second, "pgd100"))
        den = (arch["denoise"]["op"] if arch else None) or "none"
        print("%-10s %-24s %-23s %-30s %-28s %-14s" % (name, cell(first, "clean", ci=True),
                                                       cell(first, "pgd10", success=True), same,
                                                       cell(third, "autoattack", ci=True, count=True), den))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")

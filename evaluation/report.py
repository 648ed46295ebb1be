"""White-box results for people: a plain-text table and the robustness curve (Figs. 6-7)."""
from attacks.metrics import RATES

from .stats import format_rate


def format_table(results, order=None):
    """Plain-text table of white-box results (percentages)."""
    order = order or list(results)
    lines = ["%-12s %8s %22s %22s %22s" % ("attack", "images", "top-1 error % [95%]", "top-5 error % [95%]",
                                           "attack success % [95%]")]
    for name in order:
        r = results[name]
        cells = [format_rate(r[m], r["num_images"], 2) for m in RATES]
        lines.append("%-12s %8d %22s %22s %22s" % (name, r["num_images"], *cells))
    return "\n".join(lines)


def plot_curve(results, iters_by_name, path, title):
    """Figure 6/7 style: accuracy (100 - top-1 error) against attack iterations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = sorted((iters_by_name[n], 100 * (1 - r["top1_error"]), 100 * (1 - r["top1_error_ci95"][1]),
                  100 * (1 - r["top1_error_ci95"][0])) for n, r in results.items() if iters_by_name.get(n, 0) > 0)
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs, ys, lows, highs = zip(*pts)
    # Wilson's 95% interval, asymmetric near 0% and 100%
    ax.errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, lows)], [hi - y for y, hi in zip(ys, highs)]],
                marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("attack iterations")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

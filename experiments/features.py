"""Feature noise (Sec. 3): feature maps of clean and adversarial images, and a measurement
of it.

Figures 1-2: "the same feature map on clean and adversarial images, extracted from the
middle of the network (in particular, from a res3 block)", for a clean-trained and an
adversarially trained network. Figure 3: feature maps "before and after the denoising
operation" of a non-local (Gaussian) denoising network.

Sec. 3 notes feature noise is "difficult to quantitatively measure". We measure one
simple proxy per feature map f: the relative perturbation ||f(x_adv) - f(x)|| / ||f(x)||
(mean over images), at every stage output and around every denoising operation, with
x_adv a white-box targeted PGD-10 image of the same model. Comparing it before and after
a denoising operation inside one network sidesteps the cross-model comparison the paper
warns about.

    python -m experiments.features --out results/repro --data /usr/share/datasets/fashion-mnist
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def extract(model_file, images, labels, epsilon, seed=0):
    """-> (endpoints: dict name -> (clean, adversarial) arrays NHWC, adversarial uint8 images)."""
    import tensorflow as tf
    from tensorpack.tfutils.tower import TowerContext

    from attacks import make_attacker
    from evaluation.records import quantize_adversarial
    from evaluation.session import build_session
    from model import build_tower, checkpoint, network
    from nets.infer import infer_arch

    tfv1 = tf.compat.v1
    params, recorded = checkpoint.read_checkpoint(model_file)
    arch, _ = infer_arch({k: list(v.shape) for k, v in params.items()}, recorded, "NHWC")
    graph = tf.Graph()
    with graph.as_default():
        tfv1.set_random_seed(seed)
        image = tfv1.placeholder(tf.uint8, [None, arch.image_size, arch.image_size, arch.image_channels])
        label = tfv1.placeholder(tf.int32, [None])
        with TowerContext("", is_training=False):
            attacker = make_attacker("pgd", num_iter=10, epsilon=epsilon, step_size=epsilon / 10, seed=seed,
                                     per_image_seed=seed)     # eval.py's draws for the same images
            tower = build_tower(arch, image, label, attacker)
            adv = tower.adv
            endpoints = {}
            network(arch, endpoints=endpoints)(tf.concat([tower.clean, adv], 0))
    sess = build_session(graph, params, model_file)
    values, adv_out = sess.run([endpoints, adv], {image: images, label: labels})
    n = len(images)
    return ({k: (v[:n], v[n:]) for k, v in values.items()},
            quantize_adversarial(images, adv_out, epsilon))


def relative_perturbation(clean, adversarial):
    """Mean over images of ||f(adv) - f(clean)||_2 / ||f(clean)||_2."""
    import numpy as np
    c = clean.reshape(len(clean), -1).astype(np.float64)
    a = adversarial.reshape(len(adversarial), -1).astype(np.float64)
    return float(np.mean(np.linalg.norm(a - c, axis=1) / np.maximum(np.linalg.norm(c, axis=1), 1e-12)))


def strongest_channel(clean_maps):
    """The channel with the largest mean activation on clean images: a fixed rule, so the
    shown channel is not picked for how the figure looks."""
    return int(clean_maps.mean(axis=(0, 1, 2)).argmax())


def _show_row(axes, pictures, titles):
    for ax, (pic, cmap, vmax), title in zip(axes, pictures, titles):
        ax.imshow(pic, cmap=cmap, interpolation="nearest", vmin=0 if vmax else None, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=7)


def figure_feature_maps(clean_trained, adv_trained, images, path, rows=4):
    """Figs. 1-2: res3 feature maps of clean and adversarial images (white-box PGD-10 of each
    model), clean-trained vs adversarially trained baseline."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(rows, 6, figsize=(9, 1.6 * rows))
    for r in range(rows):
        pics, titles = [], []
        for tag, (ends, adv) in (("clean-trained", clean_trained), ("adv-trained", adv_trained)):
            c, a = ends["res3"]
            ch = strongest_channel(c)
            top = max(c[r, :, :, ch].max(), a[r, :, :, ch].max())     # one colour scale per pair
            pics += [(adv[r, :, :, 0], "gray", None), (c[r, :, :, ch], "viridis", top),
                     (a[r, :, :, ch], "viridis", top)]
            titles += ["%s: adv. image" % tag, "res3 ch%d, clean" % ch, "res3 ch%d, adversarial" % ch]
        _show_row(axes[r], pics, titles if r == 0 else [None] * 6)
    fig.suptitle("Feature maps (res3) of clean and adversarial images: clean vs adversarial training", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure_denoising(denoise_model, path, key="res3/denoise", rows=4):
    """Fig. 3: adversarial images and their feature maps before and after the denoising
    operation (non-local, Gaussian) of an adversarially trained network."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ends, adv = denoise_model
    before, after = ends[key + "/input"][1], ends[key + "/denoised"][1]
    ch = strongest_channel(ends[key + "/input"][0])
    fig, axes = plt.subplots(rows, 3, figsize=(4.8, 1.6 * rows))
    for r in range(rows):
        _show_row(axes[r], [(adv[r, :, :, 0], "gray", None), (before[r, :, :, ch], "viridis", None),
                            (after[r, :, :, ch], "viridis", None)],
                  ["adversarial image", "before denoising (ch%d)" % ch, "after denoising"] if r == 0 else [None] * 3)
    fig.suptitle("res3 denoising operation on adversarial images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


NOISE_FIGURE = "feature_noise.png"


def figure_noise(noise, path):
    """Relative feature perturbation per stage (solid: stage outputs; dashed: right after
    each denoising operation) for every model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stages = ["res2", "res3", "res4", "res5"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    # 20 distinct colours: the suite has more models than the default cycle's 10
    colors = plt.get_cmap("tab20").colors
    for k, (name, values) in enumerate(sorted(noise.items())):
        color = colors[k % len(colors)]
        ax.plot(range(4), [values.get(s, float("nan")) for s in stages], "-o", color=color, label=name, ms=3)
        after = [values.get(s + "/denoise/denoised") for s in stages]
        if any(v is not None for v in after):
            ax.plot(range(4), [v if v is not None else float("nan") for v in after], "--x", color=color, ms=4)
    ax.set_xticks(range(4))
    ax.set_xticklabels(stages)
    ax.set_ylabel("||f(adv) - f(clean)|| / ||f(clean)||")
    ax.set_title("Feature perturbation by white-box PGD-10 (dashed: after the denoising op)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="Feature-noise figures and measurement (Sec. 3)")
    p.add_argument("--out", required=True, help="the suite's output directory (models/ inside)")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=1, help="which training seed's models to use")
    p.add_argument("--images", type=int, default=256, help="test images for the measurement")
    p.add_argument("--epsilon", type=float, default=25.5)
    p.add_argument("--figures", default=None, help="directory of the PNGs (default: <out>/features)")
    args = p.parse_args(argv)
    import numpy as np

    from data.fashion_mnist import load_fashion_mnist
    from core.files import atomic_write
    from experiments.suite import VARIANTS

    out_dir = os.path.join(args.out, "features")
    figures = args.figures or out_dir
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(figures, exist_ok=True)
    images, labels = load_fashion_mnist(args.data, "test")
    images, labels = images[:args.images], labels[:args.images].astype(np.int32)
    if images.ndim == 3:
        images = images[..., None]
    results, kept = {}, {}
    # Figs. 1-3 show post-ReLU maps (non-negative); the denoised map of Fig. 3 is drawn on its
    # own colour scale, as its magnitude differs from the block input's.
    for v in VARIANTS:
        model = os.path.join(args.out, "models", v.name, "seed%d" % args.seed, "model-final.npz")
        if not os.path.exists(model):
            continue
        ends, adv = extract(model, images, labels, args.epsilon)
        results[v.name] = {k: relative_perturbation(c, a) for k, (c, a) in ends.items()}
        if v.name in ("baseline", "clean-baseline", "nonlocal"):
            kept[v.name] = (ends, adv)
        print("%-22s %s" % (v.name, "  ".join("%s %.3f" % (s, results[v.name][s])
                                              for s in ("res2", "res3", "res4", "res5"))))
    written = []
    if "baseline" in kept and "clean-baseline" in kept:
        written.append(os.path.join(figures, "feature_maps.png"))
        figure_feature_maps(kept["clean-baseline"], kept["baseline"], images, written[-1])
    if "nonlocal" in kept:
        written.append(os.path.join(figures, "denoising_op.png"))
        figure_denoising(kept["nonlocal"], written[-1])
    written.append(os.path.join(figures, NOISE_FIGURE))
    figure_noise(results, written[-1])
    summary = {"seed": args.seed, "images": int(len(images)), "epsilon": args.epsilon,
               "attack": "targeted PGD-10, white-box on each model", "relative_perturbation": results,
               "figures": [os.path.basename(w) for w in written]}
    atomic_write(os.path.join(out_dir, "features.json"),
                 lambda f: f.write(json.dumps(summary, indent=1, sort_keys=True)), mode="w")
    print("wrote %s" % ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())

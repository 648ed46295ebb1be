"""The attacks' speed, as ratios measured in one run (never absolute seconds across runs):

- one APGD-CE iteration against one PGD iteration on the same network and images (the graph
  loop of each; APGD's bookkeeping must cost at most 10% more);
- APGD-CE and Square against IBM ART 1.20's implementations of the same attacks on the same
  model (exported as a frozen graph, as ART takes a TensorFlow 1 graph), images, iterations
  or queries: images x iterations per second. ART is an optional extra
  (``pip install adversarial-robustness-toolbox==1.20.1``); without it those rows say so.

    python -m bench.attacks --load runs/demo/denoise/model-final.npz --json-out docs/bench/attacks.json \\
        --markdown docs/PERFORMANCE-ATTACKS.md
"""
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import core.compat  # noqa: F401,E402  (the TF2 workarounds, before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tfv1 = tf.compat.v1


def _images(limit):
    from data import load_fashion_mnist
    x, y = load_fashion_mnist("/usr/share/datasets/fashion-mnist", "test")
    return x[:limit].reshape(-1, 28, 28, 1), y[:limit].astype(np.int32)


def ours(arch, params, path, attacker, images, labels, repeats):
    """Seconds of ``attacker`` on the batch (the best of ``repeats``, after a warm-up)."""
    from tensorpack.tfutils.tower import TowerContext

    from evaluation.session import build_session
    from model import build_tower
    g = tf.Graph()
    with g.as_default():
        image = tfv1.placeholder(tf.uint8, [None, 28, 28, 1])
        label = tfv1.placeholder(tf.int32, [None])
        with TowerContext("", is_training=False):
            adv = build_tower(arch, image, label, attacker).adv
    sess = build_session(g, params, path)
    feed = {image: images, label: labels}
    sess.run(adv, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(adv, feed)
        times.append(time.perf_counter() - start)
    return min(times)


def art_classifier(predictor):
    """An ART classifier over the exported frozen graph (float32 input 0..255 BGR, logits out).
    ART 1.20 takes TensorFlow models only as eager ``TensorFlowV2Classifier``s; this process
    builds graphs, so the frozen graph runs in a session behind ART's classifier interface:
    predictions, the cross-entropy loss per image and its gradient (what APGD-CE with ART's
    ``loss_type=None`` and Square use), and class gradients."""
    from art.estimators.classification.classifier import ClassifierNeuralNetwork
    num_classes = predictor.arch.num_classes
    graph = tf.Graph()
    with graph.as_default():
        frozen = tfv1.GraphDef()
        frozen.ParseFromString(predictor.frozen_bytes())
        image = tfv1.placeholder(tf.float32, [None, 28, 28, 1], name="art_input")
        logits, = tf.import_graph_def(frozen, input_map={"input:0": image}, return_elements=["logits:0"])
        onehot = tfv1.placeholder(tf.float32, [None, num_classes])
        losses = tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits)
        gradient = tf.gradients(tf.reduce_sum(losses), image)[0]
        pick = tfv1.placeholder(tf.float32, [None, num_classes])
        class_gradient = tf.gradients(tf.reduce_sum(logits * pick), image)[0]
    sess = tfv1.Session(graph=graph)

    def as_onehot(y):
        y = np.asarray(y)
        return y.astype(np.float32) if y.ndim == 2 else np.eye(num_classes, dtype=np.float32)[y]

    class FrozenGraphClassifier(ClassifierNeuralNetwork):
        def __init__(self):
            super().__init__(model=None, clip_values=(0.0, 255.0), channels_first=False)
            self.nb_classes = num_classes

        @property
        def input_shape(self):
            return (28, 28, 1)

        def predict(self, x, batch_size=128, **kwargs):
            return np.concatenate([sess.run(logits, {image: x[i:i + batch_size]})
                                   for i in range(0, len(x), batch_size)])

        def fit(self, x, y, **kwargs):
            raise NotImplementedError("a benchmark of attacks: the model is not trained here")

        def compute_loss(self, x, y, reduction="none", **kwargs):
            values = sess.run(losses, {image: x, onehot: as_onehot(y)})
            return values if reduction == "none" else (values.mean() if reduction == "mean" else values.sum())

        def loss_gradient(self, x, y, **kwargs):
            return sess.run(gradient, {image: x, onehot: as_onehot(y)}).astype(x.dtype)

        def class_gradient(self, x, label=None, **kwargs):
            if label is not None and not np.isscalar(label):        # one class per image
                return sess.run(class_gradient, {image: x, pick: as_onehot(label)})[:, None].astype(x.dtype)
            classes = range(num_classes) if label is None else [label]
            return np.stack([sess.run(class_gradient, {image: x, pick: as_onehot(np.full(len(x), c))})
                             for c in classes], axis=1).astype(x.dtype)

        def get_activations(self, x, layer, batch_size=128, framework=False):
            raise NotImplementedError("not needed by the attacks benchmarked")

        def save(self, filename, path=None):
            raise NotImplementedError("the model is the exported frozen graph")

    return FrozenGraphClassifier()


def main(argv=None):
    from config.flags import OneLineArgumentParser, positive_int
    p = OneLineArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n\n")[0])
    p.add_argument("--load", default=os.path.join(REPO, "runs", "demo", "denoise", "model-final.npz"))
    p.add_argument("--images", type=positive_int, default=100)
    p.add_argument("--iterations", type=positive_int, default=20)
    p.add_argument("--queries", type=positive_int, default=200)
    p.add_argument("--repeats", type=positive_int, default=2)
    p.add_argument("--json-out", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)

    from core.files import PathError, check_outputs
    from model import checkpoint
    try:
        check_outputs([("--json-out", args.json_out), ("--markdown", args.markdown)], [("--load", args.load)])
        if not os.path.exists(args.load):
            raise PathError("--load %s does not exist: pass a model (bash scripts/demo.sh trains the default one)"
                            % args.load)
        params, recorded = checkpoint.read_checkpoint(args.load)
    except (PathError, checkpoint.CheckpointError) as e:
        print("python -m bench.attacks: error: %s" % e, file=sys.stderr)
        return 2
    return run(args, params, recorded)


def run(args, params, recorded):
    from attacks import make_attacker
    from core.files import atomic_write, write_json
    from core.provenance import git_commit, machine_info, machine_label
    from evaluation.predictor import Predictor
    from nets.infer import infer_arch
    arch, _ = infer_arch({k: list(v.shape) for k, v in params.items()}, recorded)
    images, labels = _images(args.images)
    n, k, q, eps = len(labels), args.iterations, args.queries, 25.5
    res = {"machine": machine_info(), "commit": git_commit(), "model": args.load, "images": n, "iterations": k,
           "queries": q, "epsilon": eps}

    pgd = ours(arch, params, args.load, make_attacker("pgd", k, eps, eps / 4, targeted=False, per_image_seed=0),
               images, labels, args.repeats)
    apgd = ours(arch, params, args.load, make_attacker("apgd-ce", k, eps, per_image_seed=0), images, labels,
                args.repeats)
    square = ours(arch, params, args.load, make_attacker("square", q, eps, per_image_seed=0), images, labels,
                  args.repeats)
    res["ours"] = {"pgd_seconds": pgd, "apgd_seconds": apgd, "square_seconds": square,
                   # the same iteration count: APGD's k iterations include its scoring of the
                   # start point (k + 1 gradient passes against PGD's k), counted against it
                   "apgd_per_pgd_iteration": apgd / pgd}
    try:
        import art  # noqa: F401
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    except ImportError:
        res["art"] = None
    else:
        predictor = Predictor(arch, params, args.load, input_dtype=tf.float32)
        clf = art_classifier(predictor)
        x = images.astype(np.float32)
        onehot = np.eye(arch.num_classes, dtype=np.float32)[labels]
        apgd_art = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=k,
                                                targeted=False, nb_random_init=1, batch_size=n, verbose=False)
        square_art = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=q, nb_restarts=1, batch_size=n, verbose=False)
        timings = {}
        for name, attack in (("apgd", apgd_art), ("square", square_art)):
            attack.generate(x[:2], y=onehot[:2])                       # warm-up
            start = time.perf_counter()
            attack.generate(x, y=onehot)
            timings[name] = time.perf_counter() - start
        res["art"] = {"version": art.__version__, "apgd_seconds": timings["apgd"], "square_seconds": timings["square"]}
        res["speedup"] = {"apgd": timings["apgd"] / apgd, "square": timings["square"] / square}
    if args.json_out:
        write_json(args.json_out, res)
    model_name = os.path.join(*os.path.abspath(args.load).split(os.sep)[-3:])      # runs/demo/<model>/...
    lines = ["# Attack speed (`python -m bench.attacks`)", "",
             "Machine: %s; commit %s; model `%s`; %d images, %d iterations, %d Square queries, epsilon %g." % (
                 machine_label(res["machine"]), res["commit"], model_name, n, k, q, eps), "",
             "| measurement | seconds | ratio |", "|---|---|---|",
             "| PGD-%d (ours) | %.2f | |" % (k, pgd),
             "| APGD-CE-%d (ours) | %.2f | %.2f x PGD's time for the same iterations |" % (
                 k, apgd, res["ours"]["apgd_per_pgd_iteration"]),
             "| Square, %d queries (ours) | %.2f | |" % (q, square)]
    if res["art"]:
        lines += ["| APGD-CE-%d (ART %s) | %.2f | ours %.1f x faster |" % (k, res["art"]["version"],
                                                                         res["art"]["apgd_seconds"],
                                                                         res["speedup"]["apgd"]),
                  "| Square, %d queries (ART %s) | %.2f | ours %.1f x faster |" % (
                      q, res["art"]["version"], res["art"]["square_seconds"], res["speedup"]["square"])]
        lines += ["", "ART runs the same exported graph in a session behind its classifier interface, so both "
                  "sides pay the same network evaluations; the difference is the attacks' own bookkeeping and "
                  "ART's extra loss evaluations per APGD iteration."]
    else:
        lines.append("| ART | not installed | `pip install adversarial-robustness-toolbox==1.20.1` |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(text), mode="w")
    return 0


if __name__ == "__main__":
    sys.exit(main())

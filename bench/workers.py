"""One measurement per process: ``python -m bench.workers KIND 'JSON params'``.

``bench.run`` starts every measurement in its own process so that peak memory is
separable; the last line printed is ``BENCH_RESULT {json}``. Every TensorFlow session uses
the default ``ConfigProto`` (intra/inter-op threads = number of cores), as train.py and
eval.py do, and oneDNN as set by ``core.compat``.

Kinds: matmul, complexity, net, keras, query_block, pipeline (see the functions below), and
many (several of them in one process).
"""
import json
import os
import resource
import statistics
import sys
import time

import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
import numpy as np
import tensorflow as tf

tfv1 = tf.compat.v1
RESULT_TAG = "BENCH_RESULT "


# ----------------------------------------------------------------------------------------
# helpers
def rss_mb():
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KB


def timed(fn, warmup, repeats):
    """Seconds per call of ``fn``: median and min over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    cpu0 = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    # CPU seconds of this process per wall second: about the core count when it had the
    # machine to itself and kept every core busy; less when it waited or others ran
    cpu_per_wall = (time.process_time() - cpu0) / max(sum(times), 1e-9)
    return {"seconds": statistics.median(times), "seconds_min": min(times), "repeats": repeats,
            "cpu_per_wall": cpu_per_wall}


def session(params):
    """A session with the default ConfigProto (as train.py/eval.py), or with the
    ``params['session']`` fields (e.g. ``{"inter_op_parallelism_threads": 1}``) to try others."""
    return tfv1.Session(config=tfv1.ConfigProto(**params.get("session", {})))


def spec_from(params):
    from nets import ArchSpec
    return ArchSpec.from_dict(params["spec"]).validate()


def _batch_variables(spec, batch, seed=0):
    """uint8 images and int32 labels held in the graph (no feed cost per step)."""
    rng = np.random.RandomState(seed)
    s, c = spec.image_size, spec.image_channels
    image = tf.constant(rng.randint(0, 256, (batch, s, s, c)).astype("uint8"))
    label = tf.constant(rng.randint(0, spec.num_classes, batch).astype("int32"))
    return image, label


# ----------------------------------------------------------------------------------------
# the machine reference
def matmul(params):
    """float32 ``n x n @ n x n`` in graph mode; FLOPs = 2 n^3."""
    n = int(params.get("n", 2048))
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.normal([n, n], seed=1))
        b = tf.Variable(tf.random.normal([n, n], seed=2))
        c = tf.matmul(a, b)
        with session(params) as sess:
            sess.run(tfv1.global_variables_initializer())
            t = timed(lambda: sess.run(c.op), params.get("warmup", 2), params.get("repeats", 5))
    flops = 2.0 * n ** 3
    return dict(t, n=n, gflops=flops / t["seconds"] / 1e9, gflops_best=flops / t["seconds_min"] / 1e9)


# ----------------------------------------------------------------------------------------
# analytic FLOPs, parameters, and the order of the dot-product non-local op
def _dot_order_check(spec, g):
    """For every dot-product non-local block of ``spec`` (built in graph ``g`` at batch 1):
    the multiply-adds of its matrix products as built, and the two possible orders computed
    from the block's shapes."""
    blocks = {}
    for op in g.get_operations():
        if op.type.startswith("BatchMatMul"):
            scope = op.name.rsplit("/", 1)[0]
            blocks.setdefault(scope, []).append(op)
    embed = bool(spec.denoise.embed)
    rows = []
    for scope, ops in sorted(blocks.items()):
        built = 0   # multiply-adds of this block's matrix products, as built
        for op in ops:
            a = [d or 1 for d in op.inputs[0].shape.as_list()]
            out = [d or 1 for d in op.outputs[0].shape.as_list()]
            k = a[-2] if op.get_attr("adj_x") else a[-1]
            built += int(np.prod(out)) * k
        conv = g.get_operation_by_name(scope + "/conv/Conv2D")
        shape = conv.inputs[0].shape.as_list()            # NHWC or NCHW, batch 1
        h, w, c = (shape[2], shape[3], shape[1]) if spec.data_format == "NCHW" else shape[1:]
        n = h * w
        m = ((h + 1) // 2) * ((w + 1) // 2) if spec.denoise.subsample else n
        d = c // 2 if embed else c
        positions_first, channels_first = n * m * (d + c), (n + m) * d * c
        rows.append({"block": scope, "positions": n, "channels": c, "built_macs": built,
                     "positions_first_macs": positions_first, "channels_first_macs": channels_first,
                     "cheaper": built == min(positions_first, channels_first)})
    return rows


def _trainable_shapes(spec):
    from tensorpack.tfutils.tower import TowerContext
    from nets import backbone_logits
    with tf.Graph().as_default(), TowerContext("", is_training=False):
        backbone_logits(tfv1.placeholder(tf.float32, [1, spec.image_size, spec.image_size, spec.image_channels]), spec)
        return [v.shape.as_list() for v in tfv1.trainable_variables()]


def complexity(params):
    """{name: {params, macs}} for the listed specs (as nets/complexity.py counts them); the
    dot-product order of the dot-product non-local nets; the trainable variables' shapes of
    ``shapes_for``."""
    from tensorpack.models.registry import disable_layer_logging
    from tensorpack.tfutils.tower import TowerContext
    from nets import ArchSpec, backbone_logits
    from nets.complexity import count_flops
    disable_layer_logging()
    out = {"archs": {}, "dot_order": {}}
    for key, d in params["specs"].items():
        spec = ArchSpec.from_dict(d).validate()
        g = tf.Graph()     # built once for the count and the order check (nets.complexity.complexity)
        with g.as_default(), TowerContext("", is_training=False):
            backbone_logits(tfv1.placeholder(tf.float32, [1, spec.image_size, spec.image_size, spec.image_channels]),
                            spec)
            p = sum(int(np.prod(v.shape.as_list())) for v in tfv1.trainable_variables())
        by_type = count_flops(g, by_type=True)
        out["archs"][key] = {"params": p, "macs": sum(by_type.values()), "batch_matmul_macs": by_type["batch_matmul"]}
        if spec.denoise.op == "nonlocal-dot":
            out["dot_order"][key] = _dot_order_check(spec, g)
    if params.get("shapes_for"):
        out["shapes"] = _trainable_shapes(ArchSpec.from_dict(params["shapes_for"]).validate())
    return out


# ----------------------------------------------------------------------------------------
# the networks
def _unrolled_attack(attacker, clean, label, model_fn, num_classes):
    """The attack of ``attacks.iterative.PGDAttacker.perturb`` with its K steps unrolled in
    the graph instead of a ``tf.while_loop`` (same verbs, same work)."""
    target = attacker.targets(clean, label, num_classes)
    adv = attacker.random_start(clean)
    state = attacker.init_state(clean)
    for _ in range(attacker.num_iter):
        logits = model_fn(adv)
        obj = tf.reduce_sum(attacker.objective(logits, label, target))
        grad = tf.gradients(obj, adv)[0]
        adv, state = attacker.step_fn(adv, grad, state)
        adv = attacker.threat.project(adv, clean)
    return tf.stop_gradient(adv)


def _gradients(params):
    """bn_gradient='tensorflow': the ablation of the frozen-BN gradient (nets/gradients.py),
    BN with TensorFlow's own gradient (FusedBatchNormGradV3) everywhere; median_gradient=
    'network': the ablation of the median's gradient, through the min/max network; xla=False,
    nonlocal_grad='tensorflow': the denoising ops without XLA loops and with TensorFlow's
    softmax gradient."""
    from nets import Gradients
    return Gradients(frozen_bn=params.get("bn_gradient") != "tensorflow",
                     median="network" if params.get("median_gradient") == "network" else "selected",
                     xla=params.get("xla", True), nonlocal_grad=params.get("nonlocal_grad", "fused"))


def net(params):
    """One measurement of one network at one batch size.

    what: forward (inference, BN frozen) | attack (targeted PGD-K in the tf.while_loop of
    attacks/) | attack_<precision>[-xla], e.g. attack_bf16, attack_fp32-xla (the same in that
    precision, with XLA: attacks/precision.py) | unrolled (the
    same K steps unrolled) | train_clean (one SGD step on clean images, BN update ops
    included) | train_adv (PGD-K then one SGD step, model/desc.py).
    bn_gradient='tensorflow', median_gradient='network': ablations (``_gradients``).
    """
    from tensorpack.models.registry import disable_layer_logging
    from tensorpack.tfutils.tower import TowerContext

    from attacks import NoAttack, make_attacker
    from model import AdvModel, build_tower, network
    disable_layer_logging()
    spec = spec_from(params)
    gradients = _gradients(params)
    batch, what, k = int(params["batch"]), params["what"], int(params.get("attack_iter", 2))
    eps = float(params.get("epsilon", 16.0))
    precision = {}
    if what.startswith("attack_"):        # attack_bf16, attack_fp16-xla: --attack-precision, --attack-xla
        name, _, xla = what.split("_", 1)[1].partition("-")
        precision = {"precision": name, "xla": xla == "xla"}
        what = "attack"
    attacker = make_attacker("pgd", k, eps, eps / k, seed=1, **precision)
    t0 = time.perf_counter()
    g = tf.Graph()
    with g.as_default():
        tfv1.set_random_seed(0)
        image, label = _batch_variables(spec, batch)
        if what in ("train_clean", "train_adv"):
            model = AdvModel(spec, attacker if what == "train_adv" else NoAttack(), gradients=gradients)
            with TowerContext("", is_training=True):
                cost = model.build_graph(image, label)
                opt = model.optimizer()
                train = opt.minimize(cost)
                fetch = tf.group(train, *tfv1.get_collection(tfv1.GraphKeys.UPDATE_OPS))
        else:
            with TowerContext("", is_training=False):
                if what == "forward":
                    fetch = build_tower(spec, image, label, gradients=gradients).logits.op
                elif what == "attack":
                    fetch = build_tower(spec, image, label, attacker, gradients=gradients).adv.op
                elif what == "unrolled":
                    from attacks import to_model_space
                    clean = to_model_space(image)
                    frozen = network(spec, gradients=gradients)
                    frozen(clean)
                    fetch = _unrolled_attack(attacker, clean, label, frozen, spec.num_classes).op
                else:
                    raise ValueError("unknown measurement %r" % what)
        build = time.perf_counter() - t0
        with session(params) as sess:
            sess.run(tfv1.global_variables_initializer())
            base = rss_mb()
            t = timed(lambda: sess.run(fetch), int(params.get("warmup", 1)), int(params.get("repeats", 2)))
            out = dict(t, what=params["what"], batch=batch,
                       attack_iter=k if what in ("attack", "unrolled", "train_adv") else 0,
                       build_seconds=build, rss_before_mb=base)
            if params.get("profile"):
                out["profile"] = _profile(sess, fetch, params["profile"])
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _profile(sess, fetch, top):
    """Time per op type of one step from the TensorFlow step stats (the timeline's data)."""
    opts = tfv1.RunOptions(trace_level=tfv1.RunOptions.FULL_TRACE)
    meta = tfv1.RunMetadata()
    sess.run(fetch, options=opts, run_metadata=meta)
    per_type, total = {}, 0
    for dev in meta.step_stats.dev_stats:
        for node in dev.node_stats:
            name = node.node_name.split(":")[0]
            op_type = node.timeline_label.split("=")[-1].split("(")[0].strip() if "=" in node.timeline_label \
                else name
            us = node.op_end_rel_micros - node.op_start_rel_micros
            per_type[op_type] = per_type.get(op_type, 0) + us
            total += us
    rows = sorted(per_type.items(), key=lambda kv: -kv[1])[:int(top)]
    return {"total_op_ms": total / 1e3, "top": [{"op": k, "ms": v / 1e3, "share": v / max(total, 1)}
                                                 for k, v in rows]}


# ----------------------------------------------------------------------------------------
# the reference a user would otherwise pick
def keras(params):
    """``tf.keras.applications.ResNet50(weights=None)`` forward (inference), graph mode."""
    batch = int(params["batch"])
    with tf.Graph().as_default():
        rng = np.random.RandomState(0)
        x = tf.constant(rng.uniform(-1, 1, (batch, 224, 224, 3)).astype("float32"))
        model = tf.keras.applications.ResNet50(weights=None)
        before = set(tf.compat.v1.get_default_graph().get_operations())   # the model's own symbolic copy
        y = model(x, training=False)
        from nets.complexity import count_flops

        class Called:   # the ops of the call only
            @staticmethod
            def get_operations():
                return [op for op in tf.compat.v1.get_default_graph().get_operations() if op not in before]
        macs = count_flops(Called) // batch   # per image, as for our nets
        with session(params) as sess:
            sess.run(tfv1.global_variables_initializer())
            base = rss_mb()
            t = timed(lambda: sess.run(y.op), int(params.get("warmup", 1)), int(params.get("repeats", 3)))
    return dict(t, batch=batch, what="forward", macs=macs, rss_before_mb=base, peak_rss_mb=peak_rss_mb())


# ----------------------------------------------------------------------------------------
# the memory-bounded Gaussian non-local op
def query_block(params):
    """The Gaussian non-local op alone on a [B, H, W, C] feature map (res2 of ImageNet:
    56x56x256, embedding 128): forward + gradient w.r.t. the input (an attack step's work),
    with ``query_block`` query positions at a time (0: the full N x N weights). Weights and
    input come from a fixed numpy seed, so runs with different blocks compare exactly; the
    output and gradient are saved to ``params['save']`` (npz) for that comparison."""
    from tensorpack.models.registry import disable_layer_logging
    from tensorpack.tfutils.tower import TowerContext
    from nets import DenoiseSpec
    from nets.denoise_ops import nonlocal_gaussian
    disable_layer_logging()
    b, h, c = int(params["batch"]), int(params.get("size", 56)), int(params.get("channels", 256))
    qb = int(params["query_block"])
    rng = np.random.RandomState(0)
    x_np = rng.standard_normal((b, h, h, c)).astype("float32")
    with tf.Graph().as_default():
        x = tf.Variable(x_np)
        with TowerContext("", is_training=False), tfv1.variable_scope("nl"):
            y = nonlocal_gaussian(x, DenoiseSpec("nonlocal", query_block=qb), "NHWC")
        grad = tf.gradients(tf.reduce_sum(y * y), x)[0]
        weights = [v for v in tfv1.global_variables() if v is not x]
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            for v in sorted(weights, key=lambda v: v.name):
                shape = v.shape.as_list()
                sess.run(v.assign(rng.standard_normal(shape).astype("float32") / np.sqrt(np.prod(shape[:-1]))))
            base = rss_mb()
            t = timed(lambda: sess.run([y.op, grad.op]), int(params.get("warmup", 1)), int(params.get("repeats", 3)))
            if params.get("save"):
                y_np, g_np = sess.run([y, grad])
                np.savez(params["save"], y=y_np, grad=g_np)
    n = h * h
    d = c // 2
    macs = b * (2 * n * c * d + n * n * (d + c))   # theta, phi embeddings + the two N x N products
    return dict(t, batch=b, positions=n, channels=c, query_block=qb, forward_macs=macs,
                rss_before_mb=base, peak_rss_mb=peak_rss_mb())


# ----------------------------------------------------------------------------------------
# the input pipeline
def _make_jpegs(directory, count, width, height, seed=0):
    """Photograph-like JPEGs (smooth colour fields, edges and noise; quality 90)."""
    import cv2
    rng = np.random.RandomState(seed)
    os.makedirs(directory, exist_ok=True)
    paths, sizes = [], []
    yy, xx = np.mgrid[0:height, 0:width].astype("float32")
    for i in range(count):
        img = np.zeros((height, width, 3), "float32")
        for ch in range(3):
            fx, fy, ph = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., ch] = 128 + 90 * np.sin(fx * xx + ph) * np.cos(fy * yy)
        for _ in range(12):   # some objects with edges
            x0, y0 = rng.randint(0, width), rng.randint(0, height)
            cv2.circle(img, (x0, y0), int(rng.randint(10, 80)), rng.uniform(0, 255, 3).tolist(), -1)
        img += rng.normal(0, 6, img.shape)
        path = os.path.join(directory, "img%04d.JPEG" % i)
        cv2.imwrite(path, np.clip(img, 0, 255).astype("uint8"), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
        sizes.append(os.path.getsize(path))
    return paths, sizes


def pipeline(params):
    """Decode + the training augmentation of data/augment.py, one process, one thread
    (OpenCV's own threads off): images per second per core."""
    import tempfile
    import cv2
    from data.augment import ImageMapper, train_augmentors
    cv2.setNumThreads(int(params.get("cv2_threads", 1)))
    count = int(params.get("count", 64))
    with tempfile.TemporaryDirectory() as tmp:
        paths, sizes = _make_jpegs(tmp, count, int(params.get("width", 500)), int(params.get("height", 375)))
        mapper = ImageMapper(train_augmentors(int(params.get("image_size", 224))), seed=0)
        decode_only = ImageMapper([], seed=0)
        for p in paths[:4]:
            mapper((p, 0))

        def run(m):
            start = time.perf_counter()
            for _ in range(int(params.get("passes", 1))):
                for i, p in enumerate(paths):
                    m((p, i))
            return (time.perf_counter() - start) / (count * int(params.get("passes", 1)))

        per_image = min(run(mapper) for _ in range(int(params.get("repeats", 2))))
        per_decode = min(run(decode_only) for _ in range(int(params.get("repeats", 2))))
    return {"images": count, "mean_jpeg_kb": float(np.mean(sizes)) / 1024, "seconds_per_image": per_image,
            "images_per_second": 1.0 / per_image, "decode_only_images_per_second": 1.0 / per_decode,
            "cv2_threads": int(params.get("cv2_threads", 1)), "image_size": int(params.get("image_size", 224)),
            "width": int(params.get("width", 500)), "height": int(params.get("height", 375)),
            "peak_rss_mb": peak_rss_mb()}


def measure(kind, params):
    """One measurement with the matmul reference of ``params['ref_n']`` just before and after."""
    ref = {"n": params.get("ref_n"), "warmup": 1, "repeats": 3, "session": params.get("session", {})}
    load = os.getloadavg()[0]
    before = matmul(ref) if ref["n"] else None
    result = KINDS[kind](params)
    if ref["n"]:
        after = matmul(ref)
        result["matmul_gflops_local"] = (before["gflops"] + after["gflops"]) / 2
        result["matmul_gflops_local_range"] = sorted([before["gflops"], after["gflops"]])
        # per CPU-second of this process: less sensitive to other processes taking turns on the cores
        result["matmul_gflops_per_cpu_second_local"] = (before["gflops"] / before["cpu_per_wall"] +
                                                        after["gflops"] / after["cpu_per_wall"]) / 2
        # the matmul keeps every core busy: well under the core count means others ran too
        result["matmul_cpu_per_wall_local"] = (before["cpu_per_wall"] + after["cpu_per_wall"]) / 2
    result["loadavg_1min_before"] = load
    return result


def many(params):
    """Several measurements in this one process (``bench.run --one-process``: fast, but the
    peak memory of each is then the peak so far)."""
    results = []
    for kind, p in params["jobs"]:
        start = time.perf_counter()
        try:
            r = measure(kind, p)
        except Exception as e:  # noqa: BLE001  (reported per measurement, the others go on)
            r = {"error": "%s: %s" % (type(e).__name__, e)}
        r["process_seconds"] = time.perf_counter() - start
        r["shared_process"] = True
        results.append(r)
    return {"results": results}


KINDS = {"matmul": matmul, "complexity": complexity, "net": net, "keras": keras,
         "query_block": query_block, "pipeline": pipeline}


def main():
    kind, params = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = many(params) if kind == "many" else measure(kind, params)
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

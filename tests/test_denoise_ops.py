"""The denoising operations of nets/denoise_ops.py against the numpy references of
tests/reference_ops.py (the paper's Eq. 1-3), in both layouts, and their gradients
against finite differences.

NCHW on CPU: TensorFlow's default CPU kernels of Conv2D and MaxPool are NHWC-only ("The
Conv2D op currently only supports the NHWC tensor format on the CPU"), unless oneDNN is on,
which it is not by default on CPUs without AVX-512 (and its switch is read once, when
TensorFlow is loaded). The sessions here therefore ask grappler's layout optimizer to
rewrite NCHW kernels to NHWC on CPU (``cpu_layout_conversion = NCHW_TO_NHWC``): it puts
transposes around those kernels only, so the graph still computes the function the NCHW code
of the op describes (reshapes, matmul orders, slices, pads, channel axes are untouched).
"""
import math

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

import nets  # noqa: F401  (graph mode)
import reference_ops as ref
from nets.denoise_ops import DENOISE_OPS
from nets.spec import DenoiseSpec

tfv1 = tf.compat.v1
SCOPE = "denoise"
LAYOUTS = ("NHWC", "NCHW")
# the paper's defaults (Sec. 4.2): Gaussian versions embed, dot-product versions do not
EMBEDS_BY_DEFAULT = {"nonlocal": True, "bilateral": True, "nonlocal-dot": False,
                     "bilateral-dot": False, "mean": False, "median": False, "null": False}


def make_session(graph):
    cfg = config_pb2.ConfigProto()
    cfg.graph_options.rewrite_options.cpu_layout_conversion = \
        rewriter_config_pb2.RewriterConfig.NCHW_TO_NHWC
    return tfv1.Session(graph=graph, config=cfg)


def to_layout(x, data_format):
    return x if data_format == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def from_layout(y, data_format):
    return y if data_format == "NHWC" else y.transpose(0, 2, 3, 1)


def distinct_input(shape, seed):
    """Values spaced >= 0.05 apart (in random order), so medians and maxima are unique and
    stay put under small perturbations."""
    n = int(np.prod(shape))
    rng = np.random.RandomState(seed)
    values = (rng.permutation(n) - n / 2.0) * (2.5 / n)
    return (values + rng.uniform(0, 0.2 / n, n)).reshape(shape)


def embedding_weights(values):
    """(theta W, phi W) read from the op's variables, or (None, None) if it has none."""
    names = set(values)
    expected = {SCOPE + "/embedding_theta/W", SCOPE + "/embedding_phi/W"}
    if not names:
        return None, None
    assert names == expected, "unexpected variables %s" % sorted(names)
    return values[SCOPE + "/embedding_theta/W"], values[SCOPE + "/embedding_phi/W"]


def reference(op, spec, x, theta, phi):
    if op == "nonlocal":
        return ref.nonlocal_gaussian(x, theta, phi, subsample=spec.subsample)
    if op == "nonlocal-dot":
        return ref.nonlocal_dot(x, theta, phi, subsample=spec.subsample)
    if op == "bilateral":
        return ref.bilateral_gaussian(x, spec.kernel_size, theta, phi)
    if op == "bilateral-dot":
        return ref.bilateral_dot(x, spec.kernel_size, theta, phi)
    if op == "mean":
        return ref.mean_filter(x, spec.kernel_size)
    if op == "median":
        return ref.median_filter(x, spec.kernel_size)
    if op == "null":
        return np.array(x, dtype=np.float64)
    raise KeyError(op)


def build(op, spec, shape_nhwc, data_format, dtype):
    """Graph with DENOISE_OPS[op] applied to a placeholder of the layout's shape."""
    graph = tf.Graph()
    with graph.as_default():
        tfv1.set_random_seed(1234)
        shape = to_layout(np.zeros(shape_nhwc), data_format).shape
        x = tfv1.placeholder(dtype, shape, name="x")
        with tfv1.variable_scope(SCOPE):
            y = DENOISE_OPS[op](x, spec, data_format)
        assert y.shape.as_list() == list(shape), "the op changed the static shape"
        assert y.dtype == dtype
    return graph, x, y


# ----------------------------------------------------------------------------------------
# forward: every op vs. its equation
def _case(op, shape, order=None, softmaxes=None, **kw):
    name = "-".join([op] + ["%s=%s" % kv for kv in sorted(kw.items())] + ["x".join(map(str, shape))])
    return pytest.param(op, DenoiseSpec(op, **kw), shape, order, softmaxes, id=name)


# nonlocal-dot picks (Q K^T) V ("positions") when N*M*(d+C) <= (N+M)*d*C, else Q (K^T V):
# few positions and many channels force the first, many positions and few channels the
# second. The test checks in the graph which one was built.
FORWARD_CASES = [
    _case("nonlocal", (2, 5, 6, 8), softmaxes=1),
    _case("nonlocal", (2, 5, 6, 8), softmaxes=5, query_block=7),        # 30 = 7+7+7+7+2
    _case("nonlocal", (2, 5, 6, 8), softmaxes=1, subsample=True),       # 5x6 -> 3x3 (partial)
    _case("nonlocal", (1, 5, 6, 8), softmaxes=3, subsample=True, query_block=11),
    _case("nonlocal", (2, 3, 4, 4), softmaxes=1, embed=False),
    _case("nonlocal-dot", (2, 2, 2, 8), order="positions"),
    _case("nonlocal-dot", (2, 5, 6, 4), order="channels"),
    _case("nonlocal-dot", (2, 2, 2, 8), order="positions", embed=True),
    _case("nonlocal-dot", (2, 5, 6, 4), order="channels", embed=True),
    _case("nonlocal-dot", (2, 3, 4, 16), order="positions", subsample=True),
    _case("nonlocal-dot", (2, 5, 6, 4), order="channels", subsample=True),
    _case("nonlocal-dot", (1, 5, 6, 8), order="channels", subsample=True, embed=True),
    _case("bilateral", (2, 5, 6, 8)),
    _case("bilateral", (2, 5, 6, 4), kernel_size=5),
    _case("bilateral", (2, 5, 6, 4), embed=False),
    _case("bilateral-dot", (2, 5, 6, 4)),
    _case("bilateral-dot", (2, 5, 6, 8), embed=True),
    _case("bilateral-dot", (1, 5, 6, 4), kernel_size=5),
    _case("mean", (2, 5, 6, 4)),
    _case("mean", (2, 5, 6, 4), kernel_size=5),
    _case("median", (2, 5, 6, 4)),
    _case("median", (2, 5, 6, 4), kernel_size=5),
    _case("null", (2, 5, 6, 4)),
]


def _matmul_shapes(graph):
    return [op.outputs[0].shape.as_list() for op in graph.get_operations() if "MatMul" in op.type]


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("op,spec,shape,order,softmaxes", FORWARD_CASES)
def test_op_matches_reference(op, spec, shape, order, softmaxes, data_format):
    rng = np.random.RandomState(0)
    x = rng.randn(*shape).astype(np.float32)
    graph, inp, out = build(op, spec, shape, data_format, tf.float32)
    with graph.as_default():
        variables = tfv1.global_variables()
    with make_session(graph) as sess:
        sess.run(tfv1.variables_initializer(variables))
        values = dict(zip([v.op.name for v in variables], sess.run(variables)))
        y = from_layout(sess.run(out, {inp: to_layout(x, data_format)}), data_format)

    theta, phi = embedding_weights(values)
    embeds = EMBEDS_BY_DEFAULT[op] if spec.embed is None else spec.embed
    assert (theta is not None) == embeds, "embedding variables: %s" % sorted(values)
    if embeds:
        assert theta.shape == phi.shape == (1, 1, shape[3], shape[3] // 2)

    expected = reference(op, spec, x.astype(np.float64), theta, phi)
    scale = np.abs(expected).max()
    assert scale > 0.1
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * scale)

    if order is not None:   # nonlocal-dot: which product was formed
        n = shape[1] * shape[2]
        m = (-(-shape[1] // 2)) * (-(-shape[2] // 2)) if spec.subsample else n
        has_nm = [shape[0], n, m] in _matmul_shapes(graph)
        assert has_nm == (order == "positions"), _matmul_shapes(graph)
    if softmaxes is not None:  # nonlocal: query blocks
        count = sum(o.type == "Softmax" for o in graph.get_operations())
        assert count == softmaxes


def test_reference_sanity():
    """A few hand-computed values of the references themselves."""
    x = np.array([[1., 2., 9.], [4., 5., 6.], [7., 8., 3.]]).reshape(1, 3, 3, 1)
    pooled = ref.max_pool_2x2_same(x)
    assert pooled[0, :, :, 0].tolist() == [[5., 9.], [8., 3.]]
    mean = ref.mean_filter(x)[0, :, :, 0]
    assert mean[0, 0] == pytest.approx((1 + 2 + 4 + 5) / 4.0)
    assert mean[1, 1] == pytest.approx(45 / 9.0)
    # symmetric padding: the corner window is [[1,1,2],[1,1,2],[4,4,5]] -> median 2
    median = ref.median_filter(x)[0, :, :, 0]
    assert median[0, 0] == 2.0 and median[1, 1] == 5.0
    # dot product non-local = (1/N) X X^T X over flattened positions
    xs = np.random.RandomState(1).randn(1, 2, 3, 4)
    flat = xs.reshape(6, 4)
    np.testing.assert_allclose(ref.nonlocal_dot(xs).reshape(6, 4), flat @ flat.T @ flat / 6)
    # a 1x1 bilateral window is the identity (softmax over one neighbour)
    np.testing.assert_allclose(ref.bilateral_gaussian(xs, kernel_size=1), xs)


# ----------------------------------------------------------------------------------------
# gradients vs. central differences
GRAD_CASES = [
    pytest.param("nonlocal", {}, id="nonlocal"),
    pytest.param("nonlocal", dict(query_block=5), id="nonlocal-query_block"),
    pytest.param("nonlocal", dict(subsample=True), id="nonlocal-subsample"),
    pytest.param("nonlocal-dot", {}, id="nonlocal-dot"),
    pytest.param("nonlocal-dot", dict(embed=True), id="nonlocal-dot-embed"),
    pytest.param("nonlocal-dot", dict(subsample=True), id="nonlocal-dot-subsample"),
    pytest.param("bilateral", {}, id="bilateral"),
    pytest.param("bilateral-dot", {}, id="bilateral-dot"),
    pytest.param("mean", {}, id="mean"),
    pytest.param("median", {}, id="median"),
    pytest.param("null", {}, id="null"),
]


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("op,kw", GRAD_CASES)
def test_op_gradient(op, kw, data_format):
    """d(sum(y * r))/dx and d/dW (embeddings) vs. central differences, in float64."""
    shape = (1, 3, 4, 4)
    eps = 1e-5
    x = distinct_input(shape, seed=3)
    r = np.random.RandomState(4).randn(*shape)
    graph, inp, out = build(op, DenoiseSpec(op, **kw), shape, data_format, tf.float64)
    with graph.as_default():
        variables = tfv1.global_variables()
        loss = tf.reduce_sum(out * tf.constant(to_layout(r, data_format)))
        grads = tf.gradients(loss, [inp] + variables)
        assert all(g is not None for g in grads)
    feed = to_layout(x, data_format)
    with make_session(graph) as sess:
        sess.run(tfv1.variables_initializer(variables))
        analytic = sess.run(grads, {inp: feed})

        def loss_at(xv):
            return sess.run(loss, {inp: xv})

        numeric_x = np.zeros_like(feed)
        for idx in np.ndindex(*feed.shape):
            plus, minus = feed.copy(), feed.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric_x[idx] = (loss_at(plus) - loss_at(minus)) / (2 * eps)
        np.testing.assert_allclose(analytic[0], numeric_x, rtol=1e-6, atol=1e-7)
        assert np.abs(numeric_x).max() > 1e-2

        for var, grad in zip(variables, analytic[1:]):
            w = sess.run(var)
            numeric_w = np.zeros_like(w)
            for idx in np.ndindex(*w.shape):
                for sign in (1, -1):
                    shifted = w.copy()
                    shifted[idx] += sign * eps
                    var.load(shifted, sess)
                    numeric_w[idx] += sign * loss_at(feed) / (2 * eps)
            var.load(w, sess)
            np.testing.assert_allclose(grad, numeric_w, rtol=1e-6, atol=1e-7, err_msg=var.op.name)

"""The denoising operations of nets/denoise_ops.py against the numpy references of
tests/reference_ops.py (the paper's Eq. 1-3), in both layouts, and their gradients
against finite differences.

NCHW kernels need oneDNN on CPUs without AVX-512, which core/compat.py turns on
before TensorFlow is imported.

oneDNN's max pooling (TF 2.15.1) caches its primitives by logical dimensions, not by
layout: in one process, an NHWC MaxPool run after an NCHW one of the same dimensions
returns wrong values. So NCHW tests use NCHW_EXTRA_BATCH more images than NHWC ones, and
the two layouts never pool tensors of the same dimensions.
"""

import numpy as np
import pytest
import tensorflow as tf

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


NCHW_EXTRA_BATCH = 2   # see the module docstring (oneDNN max pooling)


def make_session(graph):
    return tfv1.Session(graph=graph)


def to_layout(x, data_format):
    return x if data_format == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def from_layout(y, data_format):
    return y if data_format == "NHWC" else y.transpose(0, 2, 3, 1)


def distinct_input(shape, seed):
    """Distinct values about 2.5/size apart, in random order, so that medians and maxima
    are unique and stay put under the finite differences' perturbations."""
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


def generic_embeddings(sess, variables, seed=7):
    """Give the embeddings weights of a generic scale (std 1/sqrt(C)) before comparing with
    the equations: the original's N(0, 0.01) start (tested in test_nets.py) makes a
    dot-product op's output about 1e-3 of its input, too small for the comparison to see a
    wrong formula."""
    rng = np.random.RandomState(seed)
    for v in variables:
        shape = v.shape.as_list()
        v.load((rng.randn(*shape) / np.sqrt(shape[2])).astype(v.dtype.base_dtype.as_numpy_dtype), sess)


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
    name = "-".join([op] + ["%s=%s" % kv for kv in sorted(kw.items())]
                    + ["x".join(map(str, shape))])
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


@pytest.mark.parametrize("op,spec,shape,order,softmaxes", FORWARD_CASES)
@pytest.mark.parametrize("data_format", LAYOUTS)
def test_op_matches_reference(op, spec, shape, order, softmaxes, data_format):
    if data_format == "NCHW":
        shape = (shape[0] + NCHW_EXTRA_BATCH,) + shape[1:]
    rng = np.random.RandomState(0)
    x = rng.randn(*shape).astype(np.float32)
    graph, inp, out = build(op, spec, shape, data_format, tf.float32)
    with graph.as_default():
        variables = tfv1.global_variables()
    with make_session(graph) as sess:
        sess.run(tfv1.variables_initializer(variables))
        generic_embeddings(sess, variables)
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


@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
def test_median_gradient_with_ties_reaches_one_median_element_per_output(dtype):
    """Features after a ReLU hold many equal values (zeros), so medians tie. Each output's
    gradient must reach exactly one input (so d sum(y * r) / dx sums to sum(r): a mask of
    every tied element would count it several times), and only an input that holds the
    median of a window around it (central differences do not exist at ties)."""
    rng = np.random.RandomState(0)
    x = rng.randint(0, 3, (2, 5, 6, 3)).astype("float32")
    r = rng.randint(1, 4, x.shape).astype("float32")      # integers: exact sums in fp16 too
    with tf.Graph().as_default():
        inp = tf.constant(x, dtype)
        out = DENOISE_OPS["median"](inp, DenoiseSpec("median"), "NHWC")
        grad = tf.gradients(tf.reduce_sum(out * tf.constant(r, dtype)), inp)[0]
        with tfv1.Session() as sess:
            y, g = sess.run([out, grad])
    y, g = y.astype("float64"), g.astype("float64")
    np.testing.assert_array_equal(y, ref.median_filter(x))
    assert g.sum() == r.sum()
    for b, i, j, c in zip(*np.nonzero(g)):
        near = y[b, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, c]
        assert x[b, i, j, c] in near, (b, i, j, c)
    assert (x == np.median(x)).mean() > 0.2                   # ties really are common here


def test_median_gradient_equals_the_exchange_networks_where_the_median_is_unique():
    """The median's own gradient and the ablation's (back through the exchange network,
    what bench.run measures it against) agree on distinct values, and the switch really
    builds the other graph (min/max gradients, no custom-gradient node)."""
    from nets import FAST, TENSORFLOW_ONLY, Gradients
    x = distinct_input((2, 5, 6, 3), seed=5).astype("float32")
    r = np.random.RandomState(6).randn(*x.shape).astype("float32")
    grads, op_types = {}, {}
    for name, gradients in (("ours", FAST), ("network", Gradients(median="network")), ("export", TENSORFLOW_ONLY)):
        with tf.Graph().as_default() as g:
            inp = tf.constant(x)
            out = DENOISE_OPS["median"](inp, DenoiseSpec("median"), "NHWC", gradients=gradients)
            grad = tf.gradients(tf.reduce_sum(out * r), inp)[0]
            with tfv1.Session() as sess:
                grads[name] = sess.run(grad)
            op_types[name] = {o.type for o in g.get_operations()}
    assert "IdentityN" in op_types["ours"] and "IdentityN" not in op_types["network"] | op_types["export"]
    assert "GreaterEqual" in op_types["network"] and "GreaterEqual" not in op_types["ours"]
    # equal up to the order of float sums: at the borders the symmetric padding sends several
    # windows' gradients to one input, summed in another order by each build
    scale = np.abs(grads["network"]).max()
    np.testing.assert_allclose(grads["ours"], grads["network"], rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(grads["ours"], grads["export"], rtol=1e-6, atol=1e-6 * scale)
    assert (grads["ours"] != 0).sum() == (grads["network"] != 0).sum()


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


def central_differences(fn, value, eps):
    grad = np.zeros_like(value)
    for idx in np.ndindex(*value.shape):
        plus, minus = value.copy(), value.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("op,kw", GRAD_CASES)
@pytest.mark.parametrize("data_format", LAYOUTS)
def test_op_gradient(op, kw, data_format):
    """d(sum(y * r))/dx and d/dW (embeddings) of the op vs. central differences of its
    equation (the numpy reference) in float64. The graph is float64 too, except where an
    NCHW op needs Conv2D or MaxPool kernels, which exist for float32 only (then float32
    tolerances). Inputs have distinct values, so medians and maxima are unique."""
    spec = DenoiseSpec(op, **kw)
    embeds = EMBEDS_BY_DEFAULT[op] if spec.embed is None else spec.embed
    float32 = data_format == "NCHW" and (embeds or spec.subsample)
    dtype, np_dtype = (tf.float32, np.float32) if float32 else (tf.float64, np.float64)
    shape = (1 + (NCHW_EXTRA_BATCH if data_format == "NCHW" else 0), 3, 4, 4)
    x = distinct_input(shape, seed=3).astype(np_dtype).astype(np.float64)
    r = np.random.RandomState(4).randn(*shape).astype(np_dtype).astype(np.float64)
    graph, inp, out = build(op, spec, shape, data_format, dtype)
    with graph.as_default():
        variables = tfv1.global_variables()
        loss = tf.reduce_sum(out * tf.constant(to_layout(r, data_format), dtype=dtype))
        grads = tf.gradients(loss, [inp] + variables)
        assert all(g is not None for g in grads)
    with make_session(graph) as sess:
        sess.run(tfv1.variables_initializer(variables))
        generic_embeddings(sess, variables)
        values = dict(zip([v.op.name for v in variables], sess.run(variables)))
        analytic = sess.run(grads, {inp: to_layout(x, data_format)})
    analytic_x = from_layout(analytic[0], data_format)
    analytic_w = dict(zip([v.op.name for v in variables], analytic[1:]))
    theta, phi = embedding_weights(values)
    assert (theta is not None) == embeds

    def loss_of(xv, th=theta, ph=phi):
        return float(np.sum(reference(op, spec, xv, th, ph) * r))

    eps = 1e-5
    tol = dict(rtol=1e-4, atol=1e-4) if float32 else dict(rtol=1e-6, atol=1e-8)
    numeric_x = central_differences(loss_of, x, eps)
    assert np.abs(numeric_x).max() > 1e-2
    np.testing.assert_allclose(analytic_x, numeric_x, **tol)
    if embeds:
        th, ph = theta.astype(np.float64), phi.astype(np.float64)
        numeric_theta = central_differences(lambda w: loss_of(x, w, ph), th, eps)
        numeric_phi = central_differences(lambda w: loss_of(x, th, w), ph, eps)
        assert np.abs(numeric_theta).max() > 1e-3 and np.abs(numeric_phi).max() > 1e-3
        np.testing.assert_allclose(analytic_w[SCOPE + "/embedding_theta/W"], numeric_theta, **tol)
        np.testing.assert_allclose(analytic_w[SCOPE + "/embedding_phi/W"], numeric_phi, **tol)


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_median_network_is_exact_on_every_binary_window(data_format):
    """The separable min/max network against numpy's median on all 512 0/1 windows: a network
    of min/max is right for every input if it is right for every 0/1 input (the 0-1
    principle), so this covers all real inputs."""
    from nets.denoise_ops import _median3x3_network
    bits = ((np.arange(512)[:, None] >> np.arange(9)) & 1).astype("float32").reshape(512, 3, 3)
    padded = bits[:, :, :, None]                                  # each window a 3x3 map: 1x1 output
    if data_format == "NCHW":
        padded = padded.transpose(0, 3, 1, 2)
    with tf.Graph().as_default():
        y = _median3x3_network(tf.constant(padded), 1, 1, data_format)
        with tfv1.Session() as sess:
            got = sess.run(y).reshape(512)
    np.testing.assert_array_equal(got, np.median(bits.reshape(512, 9), axis=1))


@pytest.mark.parametrize("op", ["nonlocal", "median", "bilateral"])
@pytest.mark.parametrize("data_format", LAYOUTS)
def test_fused_builds_give_tensorflows_values_and_gradients(op, data_format):
    """The XLA-compiled element-wise work and the Gaussian op's written-out gradient
    (nets.FAST) against TensorFlow's own ops and gradients (nets.TENSORFLOW_ONLY, what exported
    graphs carry): the same outputs and input gradients; XLA clusters in the first graph and
    none in the second."""
    from nets import FAST, TENSORFLOW_ONLY
    shape = (2 + (NCHW_EXTRA_BATCH if data_format == "NCHW" else 0), 5, 6, 8)
    x = distinct_input(shape, seed=7).astype("float32")
    r = np.random.RandomState(8).randn(*shape).astype("float32")
    got, compiled = {}, {}
    for name, gradients in (("fast", FAST), ("tensorflow", TENSORFLOW_ONLY)):
        with tf.Graph().as_default() as g:
            tfv1.set_random_seed(0)
            inp = tf.constant(to_layout(x, data_format))
            with tfv1.variable_scope("op"):
                out = DENOISE_OPS[op](inp, DenoiseSpec(op), data_format, gradients=gradients)
            grad = tf.gradients(tf.reduce_sum(out * tf.constant(to_layout(r, data_format))), inp)[0]
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                generic_embeddings(sess, tfv1.global_variables())
                got[name] = sess.run([out, grad])
            compiled[name] = sum(1 for o in g.get_operations() if "_XlaCompile" in o.node_def.attr)
    assert compiled["fast"] > 0 and compiled["tensorflow"] == 0
    for a, b in zip(got["fast"], got["tensorflow"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())

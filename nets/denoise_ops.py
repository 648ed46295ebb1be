"""Denoising operations of Sec. 4.2: the blue box of Fig. 4 and Fig. 5.

A registry from name to op: adding a filter is one decorated function
``op(x, spec, data_format, gradients=FAST) -> y`` with ``y`` of the shape of ``x``
(``gradients``: nets/gradients.py; only ops with a choice of gradient read it). Ops create their
variables (if any) in the caller's variable scope, under the names of the released
checkpoints (``embedding_theta/W``, ``embedding_phi/W``).

Every op works in both layouts, NHWC and NCHW, and is checked against a numpy
implementation of its equation in ``tests/reference_ops.py``.
"""
import math

import tensorflow as tf
from tensorpack.models import Conv2D, MaxPooling

from .gradients import FAST

tfv1 = tf.compat.v1

DENOISE_OPS = {}


def register(name):
    def deco(fn):
        DENOISE_OPS[name] = fn
        return fn
    return deco


# 'bottleneck' is a whole residual block rather than an op (Fig. 7's "+4 bottleneck",
# i.e. ResNet-164); nets/denoise_block.py builds it. It is a valid --denoise choice.
BLOCK_OPS = set()  # filled at the end of this module


# ----------------------------------------------------------------------------------------
# layout helpers
def channel_axis(data_format):
    return 1 if data_format == "NCHW" else 3


def _static_hwc(x, data_format):
    shape = x.shape.as_list()
    if data_format == "NCHW":
        return shape[2], shape[3], shape[1]
    return shape[1], shape[2], shape[3]


def _flatten_positions(x, data_format):
    """[B, H, W, C] -> [B, N, C] (NHWC); [B, C, H, W] -> [B, C, N] (NCHW)."""
    h, w, c = _static_hwc(x, data_format)
    if data_format == "NCHW":
        return tf.reshape(x, [-1, c, h * w])
    return tf.reshape(x, [-1, h * w, c])


def _unflatten_positions(y, like, data_format):
    return tf.reshape(y, tf.shape(like))


# The original initialises theta and phi from N(0, 0.01) (its resnet_model.py, non_local_op),
# not from the backbone's He init: small embeddings make the Gaussian op start as a
# near-uniform average over positions rather than a sharp attention (docs/ORIGINAL.md).
EMBEDDING_STDDEV = 0.01


def _embedding(name, x, channels, data_format):
    """A 1x1 convolution without bias: theta(x) / phi(x) of Sec. 4.2."""
    return Conv2D(name, x, channels, 1, strides=1, use_bias=False, data_format=data_format,
                  kernel_initializer=tf.compat.v1.random_normal_initializer(stddev=EMBEDDING_STDDEV))


def _embed_dim(x, data_format):
    return _static_hwc(x, data_format)[2] // 2


def _subsample(x, data_format):
    """Sec. 6.2: x_j is sub-sampled by a 2x2 max pooling; x_i stays full size."""
    return MaxPooling("subsample", x, 2, strides=2, padding="SAME", data_format=data_format)


# ----------------------------------------------------------------------------------------
# Non-local means, Eq. (1): y_i = 1/C(x) sum_{j in L} f(x_i, x_j) x_j
def _queries_and_keys(x, source, data_format, embed):
    """theta(x_i) and phi(x_j) (1x1 embeddings to C/2 channels), or x_i and x_j themselves."""
    if not embed:
        return x, source
    d = _embed_dim(x, data_format)
    return (_embedding("embedding_theta", x, d, data_format),
            _embedding("embedding_phi", source, d, data_format))


def _query_key_value(x, spec, data_format, embed):
    """Queries (x_i side), keys (x_j side, for f) and values (x_j itself, Eq. 1 averages
    x_j, not an embedding of it), each flattened over positions."""
    source = _subsample(x, data_format) if spec.subsample else x
    query, key = _queries_and_keys(x, source, data_format, embed)
    return (_flatten_positions(query, data_format), _flatten_positions(key, data_format),
            _flatten_positions(source, data_format))


def _gaussian_logits(q, k, data_format):
    """theta(x_i)^T phi(x_j) / sqrt(d), the logits of f / C(x) in the Gaussian version."""
    # the 1/sqrt(d) scale is applied to q (N x d), not to the N x M logits: cheaper
    if data_format == "NCHW":        # q [B, d, N], k [B, d, M]
        return tf.matmul(q * _inv_sqrt_d(q, data_format), k, transpose_a=True)
    return tf.matmul(q * _inv_sqrt_d(q, data_format), k, transpose_b=True)    # q [B, N, d], k [B, M, d]


def _inv_sqrt_d(q, data_format):
    return 1.0 / math.sqrt(q.shape.as_list()[1 if data_format == "NCHW" else 2])


def _weighted_mean(weights, v, data_format):
    """y_i = sum_j w_ij v_j."""
    if data_format == "NCHW":       # v [B, C, M] -> [B, C, N]
        return tf.matmul(v, weights, transpose_b=True)
    return tf.matmul(weights, v)    # v [B, M, C] -> [B, N, C]


def _gaussian_mean(q, k, v, data_format, gradients):
    """y_i = sum_j softmax_j(theta(x_i)^T phi(x_j) / sqrt(d)) x_j for the queries in ``q``.

    ``gradients.nonlocal_grad == "fused"``: the gradient is written out. With W the softmax
    weights, Y = W V and dY the incoming gradient: dV = W^T dY, dW = dY V^T, and the softmax's
    gradient dS = W * (dW - D) with D_i = sum_j dW_ij W_ij = sum_c dY_ic Y_ic (since
    dW_ij = sum_c dY_ic V_jc): an N x C product instead of TensorFlow's N x M one and its sum;
    the element-wise part is one XLA loop (``gradients.xla``). The forward ops are those of the
    "tensorflow" choice, so the values are the same."""
    def forward(q, k, v):
        weights = tf.nn.softmax(_gaussian_logits(q, k, data_format), axis=-1)     # [B, N, M]
        return weights, _weighted_mean(weights, v, data_format)

    if gradients.nonlocal_grad == "tensorflow":
        return forward(q, k, v)[1]
    scale = _inv_sqrt_d(q, data_format)
    nchw = data_format == "NCHW"

    @tf.custom_gradient
    def gaussian_mean(q, k, v):
        weights, y = forward(q, k, v)

        def grad(dy):
            if nchw:     # q [B,d,N], k [B,d,M], v [B,C,M], y and dy [B,C,N]
                dv = tf.matmul(dy, weights)
                dw = tf.matmul(dy, v, transpose_a=True)
                row = tf.expand_dims(tf.reduce_sum(dy * y, axis=1), -1)
            else:        # q [B,N,d], k [B,M,d], v [B,M,C], y and dy [B,N,C]
                dv = tf.matmul(weights, dy, transpose_a=True)
                dw = tf.matmul(dy, v, transpose_b=True)
                row = tf.reduce_sum(dy * y, axis=-1, keepdims=True)
            with gradients.fused():
                # d loss / d logits, times the scale (logits = (scale q) k^T)
                ds = weights * (dw - row) * scale
            if nchw:
                return tf.matmul(k, ds, transpose_b=True), tf.matmul(q, ds), dv
            return tf.matmul(ds, k), tf.matmul(ds, q, transpose_a=True), dv
        return y, grad
    return gaussian_mean(q, k, v)


@register("nonlocal")
def nonlocal_gaussian(x, spec, data_format, gradients=FAST):
    """Gaussian (softmax) non-local means: f = exp(theta(x_i)^T phi(x_j) / sqrt(d)),
    C = sum_j f (Sec. 4.2). d is the embedding's channel count (C/2).

    With ``spec.query_block`` > 0 the N x M weights are formed for that many query
    positions at a time (softmax is per query row, so the result is the same) to bound
    memory at large resolutions (res2 of ImageNet: N = 3136)."""
    embed = True if spec.embed is None else spec.embed
    q, k, v = _query_key_value(x, spec, data_format, embed)
    pos_axis = 2 if data_format == "NCHW" else 1
    n = q.shape.as_list()[pos_axis]
    if spec.query_block and spec.query_block < n:
        chunks = []
        for start in range(0, n, spec.query_block):
            size = min(spec.query_block, n - start)
            q_chunk = tf.slice(q, [0, 0, start], [-1, -1, size]) if data_format == "NCHW" \
                else tf.slice(q, [0, start, 0], [-1, size, -1])
            chunks.append(_gaussian_mean(q_chunk, k, v, data_format, gradients))
        y = tf.concat(chunks, axis=pos_axis)
    else:
        y = _gaussian_mean(q, k, v, data_format, gradients)
    return _unflatten_positions(y, x, data_format)


@register("nonlocal-dot")
def nonlocal_dot(x, spec, data_format, gradients=FAST):
    """Dot-product non-local means: f = x_i^T x_j, C(x) = N (Sec. 4.2); no parameters
    unless ``spec.embed``. N is the number of positions summed over (that of x_j).

    y = (1/N) Q K^T V can be computed as (Q K^T) V, costing N*M*(d + C), or as Q (K^T V),
    costing (N + M)*d*C: the cheaper order is picked from the static shapes; both are the
    same number (the weights of the "mean" never need to be formed)."""
    embed = False if spec.embed is None else spec.embed
    q, k, v = _query_key_value(x, spec, data_format, embed)
    if data_format == "NCHW":   # q [B,d,N], k [B,d,M], v [B,C,M]
        d, n = q.shape.as_list()[1:]
        c, m = v.shape.as_list()[1:]
    else:                       # q [B,N,d], k [B,M,d], v [B,M,C]
        n, d = q.shape.as_list()[1:]
        m, c = v.shape.as_list()[1:]
    positions_first = n * m * (d + c) <= (n + m) * d * c
    if data_format == "NCHW":
        if positions_first:
            y = tf.matmul(v, tf.matmul(q, k, transpose_a=True), transpose_b=True)  # V (Q^T K)^T
        else:
            y = tf.matmul(tf.matmul(v, k, transpose_b=True), q)                    # (V K^T) Q
    else:
        if positions_first:
            y = tf.matmul(tf.matmul(q, k, transpose_b=True), v)                    # (Q K^T) V
        else:
            y = tf.matmul(q, tf.matmul(k, v, transpose_a=True))                    # Q (K^T V)
    y = y * (1.0 / m)
    return _unflatten_positions(y, x, data_format)


# ----------------------------------------------------------------------------------------
# Local windows: Eq. (2) and (3), mean filter
def _shifted_windows(x, kernel_size, data_format, mode="CONSTANT"):
    """The k*k shifted copies of x, one per offset of a k x k window centred on each pixel.

    Returns a list of tensors shaped like x (zero or symmetric padding at the borders).
    ``tf.slice`` rather than Python slicing: the gradient of a strided slice is ~10x
    slower on CPUs than that of a plain slice (a pad)."""
    r = kernel_size // 2
    h, w, _ = _static_hwc(x, data_format)
    if data_format == "NCHW":
        padded = tf.pad(x, [[0, 0], [0, 0], [r, r], [r, r]], mode=mode)
        return [tf.slice(padded, [0, 0, dy, dx], [-1, -1, h, w])
                for dy in range(kernel_size) for dx in range(kernel_size)]
    padded = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode=mode)
    return [tf.slice(padded, [0, dy, dx, 0], [-1, h, w, -1])
            for dy in range(kernel_size) for dx in range(kernel_size)]


def _valid_masks(x, kernel_size, data_format):
    """For each window offset, 1 where the neighbour lies inside the feature map."""
    h, w, _ = _static_hwc(x, data_format)
    ones = tf.ones([1, 1, h, w] if data_format == "NCHW" else [1, h, w, 1], dtype=x.dtype)
    return _shifted_windows(ones, kernel_size, data_format)


@register("mean")
def mean_filter(x, spec, data_format, gradients=FAST):
    """k x k mean filter: "average pooling with a stride of 1" (Sec. 4.2), same size; at the
    borders the average is over the neighbours inside the map (TensorFlow's SAME pooling).
    TensorFlow has no NCHW average pooling on CPUs, so NCHW pools in NHWC in between."""
    k = spec.kernel_size
    if data_format == "NCHW":
        y = tf.nn.avg_pool2d(tf.transpose(x, [0, 2, 3, 1]), k, 1, "SAME")
        return tf.transpose(y, [0, 3, 1, 2])
    return tf.nn.avg_pool2d(x, k, 1, "SAME")


# The 3x3 median as a separable min/max network: sort every vertical triple of the padded map
# (3 compare-exchanges, shared by the three windows that contain that column); the median of
# a window is then med3(the largest of its columns' minima, the median of their middles, the
# smallest of their maxima), exactly (a min/max network is right for all inputs if it is right
# for all 0/1 inputs, and tests/test_denoise_ops.py checks all 512). 18 min/max per output
# where the 19-exchange network of Paeth ("Median finding on a 3x3 grid", Graphics Gems) needs 38.
def _sort3(a, b, c):
    a, b = tf.minimum(a, b), tf.maximum(a, b)
    b, c = tf.minimum(b, c), tf.maximum(b, c)
    a, b = tf.minimum(a, b), tf.maximum(a, b)
    return a, b, c


def _med3(a, b, c):
    return tf.maximum(tf.minimum(a, b), tf.minimum(tf.maximum(a, b), c))


def _axis_slice(x, axis, start, size):
    begin, sizes = [0] * 4, [-1] * 4
    begin[axis], sizes[axis] = start, size
    return tf.slice(x, begin, sizes)


def _spatial_axes(data_format):
    return (2, 3) if data_format == "NCHW" else (1, 2)


def _median3x3_network(padded, h, w, data_format):
    """The median of every 3x3 window of ``padded`` (its map padded by one on each side)."""
    rows, cols = _spatial_axes(data_format)
    low, mid, high = _sort3(*(_axis_slice(padded, rows, r, h) for r in range(3)))
    column = [lambda t, j=j: _axis_slice(t, cols, j, w) for j in range(3)]
    lows = tf.maximum(tf.maximum(column[0](low), column[1](low)), column[2](low))
    highs = tf.minimum(tf.minimum(column[0](high), column[1](high)), column[2](high))
    return _med3(lows, _med3(*(c(mid) for c in column)), highs)


def _median3x3(padded, h, w, data_format, gradients=FAST):
    """Element-wise median of the 3x3 windows of ``padded``. Gradient
    (``gradients.median == "selected"``): all of dy to the window element equal to the median
    (the first one in row-major window order, on ties: any one of them is a valid subgradient,
    and only one may take it). "network" back-propagates through the min/max ops instead
    (`python -m bench.run` measures both, in its section "Median filter gradient (ablation)")."""
    if gradients.median == "network":
        return _median3x3_network(padded, h, w, data_format)
    rows, cols = _spatial_axes(data_format)

    @tf.custom_gradient
    def median(padded):
        result = _median3x3_network(padded, h, w, data_format)

        def grad(dy):
            taken, parts = None, []
            for dy_, dx_ in ((r, c) for r in range(3) for c in range(3)):
                pick = tf.equal(_axis_slice(_axis_slice(padded, rows, dy_, h), cols, dx_, w), result)
                if taken is not None:
                    pick = tf.logical_and(pick, tf.logical_not(taken))
                taken = pick if taken is None else tf.logical_or(taken, pick)
                pads = [[0, 0]] * 4
                pads[rows], pads[cols] = [dy_, 2 - dy_], [dx_, 2 - dx_]
                parts.append(tf.pad(tf.where(pick, dy, tf.zeros_like(dy)), pads))
            return tf.add_n(parts)
        return result, grad
    return median(padded)


@register("median")
def median_filter(x, spec, data_format, gradients=FAST):
    """Eq. (3): y_i = median{x_j : j in Omega(i)}, per channel, over a k x k window of the
    symmetrically padded map (so every window holds k*k values and the median is one of
    them). The gradient flows to the selected element: for 3x3 the median comes from the
    separable exchange network of element-wise min/max (fast on every device; one XLA loop
    with ``gradients.xla``) and its gradient from the element it equals (``_median3x3``),
    otherwise through top_k."""
    if spec.kernel_size == 1:
        return tf.identity(x)
    if spec.kernel_size == 3:
        h, w, _ = _static_hwc(x, data_format)
        with gradients.fused():
            rows, cols = _spatial_axes(data_format)
            pads = [[0, 0]] * 4
            pads[rows] = pads[cols] = [1, 1]
            return _median3x3(tf.pad(x, pads, mode="SYMMETRIC"), h, w, data_format, gradients)
    windows = _shifted_windows(x, spec.kernel_size, data_format, mode="SYMMETRIC")
    k2 = spec.kernel_size ** 2
    top = tf.math.top_k(tf.stack(windows, axis=-1), k=k2 // 2 + 1, sorted=True).values
    return top[..., -1]


def _bilateral(x, spec, data_format, gaussian, gradients=FAST):
    """Eq. (2): y_i = 1/C(x) sum_{j in Omega(i)} f(x_i, x_j) x_j, Omega(i) a k x k window;
    neighbours outside the map are excluded from the sum and from C(x)."""
    embed = gaussian if spec.embed is None else spec.embed
    query, key = _queries_and_keys(x, x, data_format, embed)
    with gradients.fused():      # the k*k window products and weights: element-wise work
        return _bilateral_windows(x, query, key, spec, data_format, gaussian)


def _bilateral_windows(x, query, key, spec, data_format, gaussian):
    d = _static_hwc(query, data_format)[2]
    axis = channel_axis(data_format)
    keys = _shifted_windows(key, spec.kernel_size, data_format)
    values = _shifted_windows(x, spec.kernel_size, data_format)
    valid = tf.stack(_valid_masks(x, spec.kernel_size, data_format), axis=-1)   # [.., k*k]
    # squeeze the channel axis of the masks, keep the offset axis last
    valid = tf.squeeze(valid, axis=axis)
    logits = tf.stack([tf.reduce_sum(query * k, axis=axis) for k in keys], axis=-1)
    if gaussian:
        logits = logits * (1.0 / math.sqrt(d))
        # the lowest finite value outside the map (exp gives 0); not "+ (valid - 1) * 1e9":
        # 1e9 is inf in fp16 (attacks/precision.py) and 0 * inf is NaN
        logits = tf.where(valid > 0, logits, tf.constant(logits.dtype.min, logits.dtype))
        weights = tf.nn.softmax(logits, axis=-1)
    else:
        weights = logits * valid / tf.reduce_sum(valid, axis=-1, keepdims=True)
    per_offset = tf.unstack(weights, axis=-1)
    return tf.add_n([tf.expand_dims(wt, axis) * v for wt, v in zip(per_offset, values)])


@register("bilateral")
def bilateral_gaussian(x, spec, data_format, gradients=FAST):
    """Gaussian bilateral filter: the Gaussian weights of Eq. (1) over a local window."""
    return _bilateral(x, spec, data_format, gaussian=True, gradients=gradients)


@register("bilateral-dot")
def bilateral_dot(x, spec, data_format, gradients=FAST):
    """Dot-product bilateral filter: f = x_i^T x_j, C = |Omega(i)|."""
    return _bilateral(x, spec, data_format, gaussian=False, gradients=gradients)


@register("null")
def null_op(x, spec, data_format, gradients=FAST):
    """The "null" version (Sec. 6.1): no denoising; the block is a 1x1 conv + residual."""
    return tf.identity(x)


BLOCK_OPS.update(DENOISE_OPS)
BLOCK_OPS.add("bottleneck")

"""Plain numpy references for the denoising operations of Sec. 4.2 of the paper.

Written from the equations, independently of ``nets/denoise_ops.py``: explicit loops over
positions, float64, NHWC arrays ``[B, H, W, C]``. Slow, and only meant for tiny inputs.

- Eq. (1), non-local means: y_i = 1/C(x) sum_{j in L} f(x_i, x_j) x_j
    Gaussian:    f = exp(theta(x_i) . phi(x_j) / sqrt(d)), C = sum_j f  (a softmax over j)
    dot product: f = x_i . x_j (or theta(x_i) . phi(x_j) if embedded), C = M, the number of
                 positions j
  The weighted mean is over x_j itself, never over an embedding of it.
- Eq. (2), bilateral filter: Eq. (1) restricted to the k x k window Omega(i) around i;
  neighbours outside the feature map are excluded (from the sum and from C).
- Mean filter: the average over the in-map neighbours of the k x k window.
- Eq. (3), median filter: per channel, the median of the k x k window of the map padded
  with numpy's mode='symmetric'.

Embedding weights are the kernels of bias-free 1x1 convolutions, shape [1, 1, C, C/2]
(or already as [C, C/2] matrices); d is the embedding's channel count.
"""
import math

import numpy as np


# ----------------------------------------------------------------------------------------
# helpers
def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _as_matrix(w):
    w = _f64(w)
    if w.ndim == 4:
        assert w.shape[:2] == (1, 1), "a 1x1 convolution kernel is [1, 1, C_in, C_out]"
        w = w[0, 0]
    assert w.ndim == 2
    return w


def embed_1x1(x, w):
    """A 1x1 convolution without bias: out[b, r, c] = x[b, r, c] @ W."""
    x = _f64(x)
    w = _as_matrix(w)
    batch, height, width, channels = x.shape
    assert w.shape[0] == channels
    out = np.zeros((batch, height, width, w.shape[1]))
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                out[b, r, c] = x[b, r, c] @ w
    return out


def max_pool_2x2_same(x):
    """2x2 max pooling, stride 2, TensorFlow 'SAME' padding: the output is
    ceil(H/2) x ceil(W/2); TF pads only after (bottom/right) with -inf, so for an odd size
    the last window is partial (it holds the in-map values only)."""
    x = _f64(x)
    batch, height, width, channels = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    out = np.full((batch, out_h, out_w, channels), -np.inf)
    for b in range(batch):
        for oi in range(out_h):
            for oj in range(out_w):
                for r in range(2 * oi, min(2 * oi + 2, height)):
                    for c in range(2 * oj, min(2 * oj + 2, width)):
                        out[b, oi, oj] = np.maximum(out[b, oi, oj], x[b, r, c])
    return out


def _softmax(logits):
    logits = _f64(logits)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _queries_keys(x, source, w_theta, w_phi):
    """theta(x) and phi(source) if embedding weights are given, else x and source."""
    if (w_theta is None) != (w_phi is None):
        raise ValueError("give both embedding weights or neither")
    if w_theta is None:
        return x, source
    return embed_1x1(x, w_theta), embed_1x1(source, w_phi)


def window_positions(height, width, r, c, kernel_size):
    """The in-map positions of the k x k window centred on (r, c)."""
    h = kernel_size // 2
    return [(rr, cc)
            for rr in range(r - h, r + h + 1)
            for cc in range(c - h, c + h + 1)
            if 0 <= rr < height and 0 <= cc < width]


# ----------------------------------------------------------------------------------------
# Eq. (1): non-local means over all positions
def nonlocal_gaussian(x, w_theta=None, w_phi=None, subsample=False):
    """y_i = sum_j softmax_j(theta_i . phi_j / sqrt(d)) x_j.

    With ``subsample`` the positions j (and x_j, phi_j) come from a 2x2/2 'SAME' max pool
    of x; the queries i stay at full resolution. Without embedding weights theta = phi = x
    and d = C."""
    x = _f64(x)
    source = max_pool_2x2_same(x) if subsample else x
    queries, keys = _queries_keys(x, source, w_theta, w_phi)
    d = queries.shape[-1]
    batch, height, width, _ = x.shape
    src_h, src_w = source.shape[1:3]
    y = np.zeros_like(x)
    for b in range(batch):
        js = [(r, c) for r in range(src_h) for c in range(src_w)]
        for r in range(height):
            for c in range(width):
                logits = [queries[b, r, c] @ keys[b, rj, cj] / math.sqrt(d) for rj, cj in js]
                weights = _softmax(logits)
                for wgt, (rj, cj) in zip(weights, js):
                    y[b, r, c] += wgt * source[b, rj, cj]
    return y


def nonlocal_dot(x, w_theta=None, w_phi=None, subsample=False):
    """y_i = (1/M) sum_j (q_i . k_j) x_j, q = k = x (or theta(x), phi(x_j) if embedded);
    M is the number of positions j (of the pooled map with ``subsample``)."""
    x = _f64(x)
    source = max_pool_2x2_same(x) if subsample else x
    queries, keys = _queries_keys(x, source, w_theta, w_phi)
    batch, height, width, _ = x.shape
    src_h, src_w = source.shape[1:3]
    m = src_h * src_w
    y = np.zeros_like(x)
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                for rj in range(src_h):
                    for cj in range(src_w):
                        f = queries[b, r, c] @ keys[b, rj, cj]
                        y[b, r, c] += f * source[b, rj, cj]
                y[b, r, c] /= m
    return y


# ----------------------------------------------------------------------------------------
# Eq. (2): bilateral filters over a k x k window (in-map neighbours only)
def bilateral_gaussian(x, kernel_size=3, w_theta=None, w_phi=None):
    """y_i = sum_{j in Omega(i)} softmax_j(theta_i . phi_j / sqrt(d)) x_j."""
    x = _f64(x)
    queries, keys = _queries_keys(x, x, w_theta, w_phi)
    d = queries.shape[-1]
    batch, height, width, _ = x.shape
    y = np.zeros_like(x)
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                js = window_positions(height, width, r, c, kernel_size)
                logits = [queries[b, r, c] @ keys[b, rj, cj] / math.sqrt(d) for rj, cj in js]
                for wgt, (rj, cj) in zip(_softmax(logits), js):
                    y[b, r, c] += wgt * x[b, rj, cj]
    return y


def bilateral_dot(x, kernel_size=3, w_theta=None, w_phi=None):
    """y_i = 1/|Omega(i)| sum_{j in Omega(i)} (q_i . k_j) x_j."""
    x = _f64(x)
    queries, keys = _queries_keys(x, x, w_theta, w_phi)
    batch, height, width, _ = x.shape
    y = np.zeros_like(x)
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                js = window_positions(height, width, r, c, kernel_size)
                for rj, cj in js:
                    y[b, r, c] += (queries[b, r, c] @ keys[b, rj, cj]) * x[b, rj, cj]
                y[b, r, c] /= len(js)
    return y


# ----------------------------------------------------------------------------------------
# mean filter and Eq. (3), median filter
def mean_filter(x, kernel_size=3):
    """Average of the in-map neighbours of the k x k window (TF 'SAME' average pooling)."""
    x = _f64(x)
    batch, height, width, _ = x.shape
    y = np.zeros_like(x)
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                js = window_positions(height, width, r, c, kernel_size)
                y[b, r, c] = sum(x[b, rj, cj] for rj, cj in js) / len(js)
    return y


def median_filter(x, kernel_size=3):
    """Per-channel median of the k x k window of the map padded with mode='symmetric'."""
    x = _f64(x)
    h = kernel_size // 2
    padded = np.pad(x, ((0, 0), (h, h), (h, h), (0, 0)), mode="symmetric")
    batch, height, width, channels = x.shape
    y = np.zeros_like(x)
    for b in range(batch):
        for r in range(height):
            for c in range(width):
                for ch in range(channels):
                    y[b, r, c, ch] = np.median(padded[b, r:r + kernel_size, c:c + kernel_size, ch])
    return y


def batchnorm_inference(x, gamma, beta, mean, variance, epsilon=1e-5):
    """BN with frozen statistics, over the last axis."""
    return (_f64(x) - mean) / np.sqrt(_f64(variance) + epsilon) * gamma + beta

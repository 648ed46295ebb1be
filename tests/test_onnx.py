"""The ONNX export (eval.py --export-onnx) computes what the TensorFlow graph computes: for
every denoising op on a small net and for each released architecture, onnxruntime's logits
equal the frozen graph's within 1e-4 of their standard deviation, on random weights.

Random weights need care in deep nets: with BN statistics drawn at random, activations grow
from block to block (the dot-product non-local op is cubic in its input, so X101-DenoiseAll
overflows to NaN). ``calibrated`` sets every BN's moving statistics to the moments of its
input on a batch, so that the inference-mode network normalises at every BN, as a trained one
does, and its logits are finite and depend on the image.

Needs the onnx extra, which scripts/test.sh installs (`bash scripts/setup.sh --with onnx`)."""
import numpy as np
import pytest
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from nets import ArchSpec, DenoiseSpec, backbone_logits
from test_denoise_ops import make_session
from test_nets import assign, randomise, variables_of

tfv1 = tf.compat.v1
TOLERANCE = 1e-4          # of the logits' standard deviation
VARIANCE_FLOOR = 0.0
CALIBRATION_PASSES = 0
# |gamma| of the last BN of every residual branch and of every denoising block: measured on
# X101-DenoiseAll, a 1e-6 relative change of the input moves the logits by 2.8% of their spread
# with both at 0.1-0.3 (rounding alone then breaks any tolerance), by 4e-5 with these
BRANCH_GAMMA = (0.05, 0.1)
DENOISE_GAMMA = (0.02, 0.05)


def _runtime():
    from evaluation.predictor import onnx_missing
    missing = onnx_missing()
    assert missing is None, "%s (scripts/test.sh installs it)" % missing
    import onnxruntime
    return onnxruntime


def _bn_scope(op):
    return op.name.rsplit("/", 1)[0]


def calibrated(spec, seed, images, passes=CALIBRATION_PASSES):
    """{variable name: value}: random weights (tests/test_nets.randomise), each BN's
    mean/EMA and variance/EMA the moments of its input on ``images`` (model space): first from
    a training-mode pass, then re-measured in inference mode ``passes`` times, since every
    change upstream changes what a BN further down sees (a cubic op amplifies any mismatch)."""
    def build(training):
        graph = tf.Graph()
        with graph.as_default(), TowerContext("", is_training=training):
            image = tfv1.placeholder(tf.float32, [None] + list(images.shape[1:]))
            backbone_logits(image, spec)
            norms = [op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]
            axes = [0, 1, 2] if spec.data_format == "NHWC" else [0, 2, 3]
            moments = {_bn_scope(op): tf.nn.moments(op.inputs[0], axes) for op in norms}
        return graph, image, moments

    def update(values, measured):
        for scope, (mean, var) in measured.items():
            assert scope + "/mean/EMA" in values, scope
            # a floor keeps channels that barely vary (dead ReLUs) from amplifying rounding
            # 300-fold (1 / sqrt(BN's epsilon)), which no trained network relies on
            values[scope + "/mean/EMA"], values[scope + "/variance/EMA"] = mean, var + VARIANCE_FLOOR

    graph, image, moments = build(True)
    with make_session(graph) as sess:
        values = randomise(sess, variables_of(graph), seed)
        # the last BN of every residual branch (and of every denoising block) small, as in a
        # trained network that started from Goyal et al.'s zero gammas: otherwise 50 blocks of
        # unit-gain branches (33 cubic non-local ops in X101-DenoiseAll) make a random network
        # so sensitive that float32 rounding alone moves its logits by 1e-3 of their spread, in
        # TensorFlow as in any runtime
        rng = np.random.RandomState(seed + 1)
        for name in values:
            low, high = BRANCH_GAMMA if name.endswith("conv3/bn/gamma") else DENOISE_GAMMA if name.endswith(
                ("non_local/conv/bn/gamma", "_denoise/conv/bn/gamma")) else (None, None)
            if low is not None:
                values[name] = (rng.uniform(low, high, values[name].shape) *
                                rng.choice([-1.0, 1.0], values[name].shape)).astype(np.float32)
        assign(sess, variables_of(graph), values)
        update(values, sess.run(moments, {image: images}))
    graph, image, moments = build(False)
    with make_session(graph) as sess:
        for _ in range(passes):
            assign(sess, variables_of(graph), values)
            update(values, sess.run(moments, {image: images}))
    return values


def _check(spec, tmp_path, batch=8, seed=0):
    from evaluation.predictor import Predictor
    ort = _runtime()
    rng = np.random.RandomState(seed)
    pixels = rng.uniform(0, 255, (batch, spec.image_size, spec.image_size, spec.image_channels)).astype("float32")
    values = calibrated(spec, seed, pixels * (2.0 / 255) - 1)
    predictor = Predictor(spec, values, input_dtype=tf.float32)
    expected = predictor(pixels)
    path = tmp_path / "model.onnx"
    predictor.export_onnx(str(path))
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["input:0"]
    got = session.run(["logits:0"], {"input:0": pixels})[0]
    assert np.all(np.isfinite(expected)) and np.abs(expected[0] - expected[1]).max() > 1e-3 * expected.std()
    err = np.abs(got - expected).max() / expected.std()
    assert err < TOLERANCE, err
    return err


SMALL = ArchSpec(family="small", depth=14, width=8, num_classes=10, image_size=28, image_channels=1)
OPS = {
    "nonlocal": DenoiseSpec("nonlocal"),
    "nonlocal-dot": DenoiseSpec("nonlocal-dot"),
    "nonlocal-subsampled": DenoiseSpec("nonlocal", subsample=True),
    "bilateral": DenoiseSpec("bilateral"),
    "mean": DenoiseSpec("mean"),
    "median": DenoiseSpec("median"),
}


@pytest.mark.parametrize("op", list(OPS))
def test_every_denoising_op_exports_to_onnx_with_the_same_logits(op, tmp_path):
    _check(SMALL.replace(denoise=OPS[op]).validate(), tmp_path)


# The released models (the original's R152, R152-Denoise, X101-DenoiseAll), at 64 x 64 pixels:
# the same graph as at 224 (global pooling ends every net), a twelfth of the arithmetic.
RELEASED = {
    "R152": ArchSpec(family="resnet", depth=152, image_size=64),
    "R152-Denoise": ArchSpec(family="resnet", depth=152, denoise=DenoiseSpec("nonlocal"), image_size=64),
    "X101-DenoiseAll": ArchSpec(family="resnext", depth=101, denoise=DenoiseSpec("nonlocal-dot", at="all"),
                                image_size=64),
}


@pytest.mark.once
@pytest.mark.slow
@pytest.mark.parametrize("name", list(RELEASED))
def test_each_released_architecture_exports_to_onnx_with_the_same_logits(name, tmp_path):
    _check(RELEASED[name].validate(), tmp_path)

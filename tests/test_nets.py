"""The networks of nets/: variable names and shapes of the released checkpoints, NCHW =
NHWC, the parameter counts of Sec. 6.1, the ablation switches of Table 1, and the
architecture specs' error messages and the original release's aliases.

Only small-image nets are run; ImageNet nets are built (graph construction), never run.
"""
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

import reference_ops as ref
from nets import ArchSpec, DenoiseSpec, SpecError, backbone_logits, parse_arch
from nets.denoise_block import denoising_block
from nets.denoise_ops import BLOCK_OPS
from nets.spec import ARCH_CHOICES, FAMILIES
from test_denoise_ops import NCHW_EXTRA_BATCH, make_session

tfv1 = tf.compat.v1
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "checkpoint-variables"
SMALL = ArchSpec(family="small", depth=14, width=4, num_classes=10, image_size=28, image_channels=1)


def build_logits(spec, batch=None):
    """A graph with backbone_logits(spec) on an NHWC placeholder, inference-mode BN."""
    graph = tf.Graph()
    with graph.as_default(), TowerContext("", is_training=False):
        tfv1.set_random_seed(0)
        shape = [batch, spec.image_size, spec.image_size, spec.image_channels]
        image = tfv1.placeholder(tf.float32, shape, name="image")
        logits = backbone_logits(image, spec)
    return graph, image, logits


@functools.lru_cache(maxsize=None)
def built_graph(spec):
    """build_logits(spec)'s graph, shared by the tests that only inspect it."""
    return build_logits(spec)[0]


def variables_of(graph):
    with graph.as_default():
        return tfv1.global_variables()


# ----------------------------------------------------------------------------------------
# the released checkpoints' variables
CHECKPOINT_ARCHS = {
    "ResNet-50": ArchSpec(family="resnet", depth=50),
    "ResNet-101": ArchSpec(family="resnet", depth=101),
    "ResNet-152": ArchSpec(family="resnet", depth=152),
    "ResNetDenoise-50": ArchSpec(family="resnet", depth=50, denoise=DenoiseSpec("nonlocal")),
    "ResNetDenoise-101": ArchSpec(family="resnet", depth=101, denoise=DenoiseSpec("nonlocal")),
    "ResNetDenoise-152": ArchSpec(family="resnet", depth=152, denoise=DenoiseSpec("nonlocal")),
    "ResNeXtDenoiseAll-50": ArchSpec(family="resnext", depth=50,
                                     denoise=DenoiseSpec("nonlocal-dot", at="all")),
    "ResNeXtDenoiseAll-101": ArchSpec(family="resnext", depth=101,
                                      denoise=DenoiseSpec("nonlocal-dot", at="all")),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_ARCHS))
def test_variables_match_released_checkpoint(name):
    """Names and shapes exactly those of the released checkpoints (tests/data/checkpoint-variables/
    <name>.json; nothing missing, nothing left over), and in the same (graph) order."""
    with open(REFERENCE_DIR / (name + ".json")) as f:
        expected = [(k, list(v)) for k, v in json.load(f).items()]
    spec = CHECKPOINT_ARCHS[name].validate()
    with tf.Graph().as_default(), TowerContext("", is_training=False):
        image = tfv1.placeholder(tf.float32, [None, 224, 224, 3])
        logits = backbone_logits(image, spec)
        got = [(v.op.name, v.shape.as_list()) for v in tfv1.global_variables()]
    assert logits.shape.as_list() == [None, 1000]

    got_shapes, expected_shapes = dict(got), dict(expected)
    assert len(got_shapes) == len(got), "duplicate variable names"
    missing = sorted(set(expected_shapes) - set(got_shapes))
    extra = sorted(set(got_shapes) - set(expected_shapes))
    wrong = sorted((n, got_shapes[n], s) for n, s in expected_shapes.items()
                   if n in got_shapes and got_shapes[n] != s)
    assert not (missing or extra or wrong), "missing %s; extra %s; wrong shapes %s" % (
        missing[:5], extra[:5], wrong[:5])
    got_names, expected_names = [n for n, _ in got], [n for n, _ in expected]
    first = next((i for i, (a, b) in enumerate(zip(got_names, expected_names)) if a != b), None)
    assert first is None, "order differs at %d: %s (graph) vs %s (checkpoint list)" % (
        first, got_names[first], expected_names[first])


# ----------------------------------------------------------------------------------------
# random weights
def assign(sess, variables, values):
    """Sets every variable to values[name] in one run (feeding the initializers' values, as
    Variable.load does one at a time)."""
    sess.run([v.initializer for v in variables],
             {v.initializer.inputs[1]: values[v.op.name] for v in variables})


def randomise(sess, variables, seed):
    """Random values for every variable (BN gammas of residual branches start at 0, which
    would hide the branches), positive for the variances; returns {name: value}."""
    rng = np.random.RandomState(seed)
    values = {}
    for v in variables:
        name, shape = v.op.name, v.shape.as_list()
        if name.endswith("variance/EMA"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        elif name.endswith(("beta", "mean/EMA", "/b")):
            value = rng.normal(0.0, 0.2, shape)
        else:   # conv and FC kernels: fan-in scaling keeps activations O(1)
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        values[name] = value.astype(v.dtype.as_numpy_dtype)
    assign(sess, variables, values)
    return values


# ----------------------------------------------------------------------------------------
# Sec. 6.1: extra parameters of the denoising variants
def count_parameters(spec):
    graph = built_graph(spec)
    with graph.as_default():
        trainable = {v.op.name for v in tfv1.trainable_variables()}
        variables = tfv1.global_variables()
    # every variable is a weight or a BN statistic (no optimizer state in these graphs)
    assert all(v.op.name in trainable or v.op.name.endswith("/EMA") for v in variables)
    return sum(int(np.prod(v.shape.as_list())) for v in variables)


def test_parameter_counts_of_denoising_variants():
    """"The 1x1 null version has the exact same number of extra parameters as the mean
    filtering, median filtering, and bilateral/non-local filtering's dot product versions
    (which have no embedding)" (Sec. 6.1); the Gaussian versions add their embeddings."""
    base = count_parameters(SMALL)
    extra = {op: count_parameters(SMALL.replace(denoise=DenoiseSpec(op))) - base
             for op in ("null", "mean", "median", "nonlocal-dot", "bilateral-dot",
                        "nonlocal", "bilateral", "bottleneck")}
    # one block after each of the 4 stages: 1x1 conv C x C + BN (gamma, beta, mean, variance)
    channels = [4 * SMALL.width * 2 ** stage for stage in range(4)]
    block = sum(c * c + 4 * c for c in channels)
    embeddings = sum(2 * c * (c // 2) for c in channels)   # theta, phi: C -> C/2 each
    # Fig. 7's "+4 bottleneck": standard bottlenecks C -> C/4 (1x1) -> C/4 (3x3) -> C (1x1)
    bottleneck = sum(c * (c // 4) + 9 * (c // 4) ** 2 + (c // 4) * c + 4 * (c // 4 + c // 4 + c)
                     for c in channels)
    assert extra == {"null": block, "mean": block, "median": block, "nonlocal-dot": block,
                     "bilateral-dot": block, "nonlocal": block + embeddings,
                     "bilateral": block + embeddings, "bottleneck": bottleneck}


# ----------------------------------------------------------------------------------------
# Table 1's switches: the 1x1 conv and the residual connection
def denoise_variables(spec):
    graph = built_graph(spec)
    names = [v.op.name for v in variables_of(graph)]
    pattern = (r"^group\d_denoise/" if spec.denoise.at == "groups"
               else r"^group\d/block\d+/non_local/")
    return graph, [n for n in names if re.match(pattern, n)]


@pytest.mark.parametrize("op,at", [("nonlocal", "groups"), ("nonlocal-dot", "all")])
def test_without_1x1_no_conv_variables(op, at):
    _, with_1x1 = denoise_variables(SMALL.replace(denoise=DenoiseSpec(op, at=at)))
    _, without = denoise_variables(SMALL.replace(denoise=DenoiseSpec(op, at=at, use_1x1=False)))
    assert any("/conv/" in n for n in with_1x1)
    assert not any("/conv/" in n for n in without)
    # what remains are the embeddings (Gaussian) or nothing at all (dot product)
    assert without == [n for n in with_1x1 if "/embedding_" in n]
    assert bool(without) == (op == "nonlocal")


@pytest.mark.parametrize("residual,gamma", [(True, 0.0), (False, 1.0)])
def test_block_bn_gamma_initialisation(residual, gamma):
    """With the residual connection the block starts as the identity (gamma = 0); without
    it the 1x1 branch is the whole output and must not start at zero (gamma = 1)."""
    spec = SMALL.replace(denoise=DenoiseSpec("nonlocal", residual=residual))
    graph, names = denoise_variables(spec)
    gammas = [n for n in names if n.endswith("conv/bn/gamma")]
    assert len(gammas) == 4
    with graph.as_default():
        by_name = {v.op.name: v for v in tfv1.global_variables()}
    with make_session(graph) as sess:
        sess.run(tfv1.variables_initializer(list(by_name.values())))
        for n in gammas:
            np.testing.assert_array_equal(sess.run(by_name[n]), gamma)


@pytest.mark.parametrize("use_1x1,residual", [(True, True), (False, True), (True, False)])
def test_denoising_block_output(use_1x1, residual):
    """y = x + BN(conv1x1(op(x))) (Fig. 4), without the 1x1: x + op(x), without the
    residual: BN(conv1x1(op(x))); op = 3x3 mean filter, random weights, inference BN."""
    x = np.random.RandomState(5).randn(1, 3, 4, 4).astype(np.float32)
    spec = DenoiseSpec("mean", use_1x1=use_1x1, residual=residual)
    graph = tf.Graph()
    with graph.as_default(), TowerContext("", is_training=False):
        inp = tfv1.placeholder(tf.float32, x.shape)
        out = denoising_block("blk", inp, spec, "NHWC")
        variables = tfv1.global_variables()
    with make_session(graph) as sess:
        values = randomise(sess, variables, seed=6)
        y = sess.run(out, {inp: x})
    assert sorted(values) == (sorted("blk/conv/" + n for n in (
        "W", "bn/gamma", "bn/beta", "bn/mean/EMA", "bn/variance/EMA")) if use_1x1 else [])
    expected = ref.mean_filter(x.astype(np.float64))
    if use_1x1:
        expected = ref.embed_1x1(expected, values["blk/conv/W"])
        bn = [values["blk/conv/bn/" + n] for n in ("gamma", "beta", "mean/EMA", "variance/EMA")]
        expected = ref.batchnorm_inference(expected, *bn)
    if residual:
        expected = expected + x
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_block_needs_1x1_or_residual():
    spec = SMALL.replace(denoise=DenoiseSpec("nonlocal", use_1x1=False, residual=False))
    with pytest.raises(SpecError) as err:
        spec.validate()
    assert "\n" not in str(err.value)
    for ok in (DenoiseSpec("nonlocal", use_1x1=False), DenoiseSpec("nonlocal", residual=False)):
        SMALL.replace(denoise=ok).validate()


# ----------------------------------------------------------------------------------------
# bad input and the original release's names
def _tokens(message):
    return set(re.split(r"[\s,;:|()'\"]+", message))


BAD_SPECS = [
    pytest.param(lambda: ArchSpec(family="resnet", depth=34).validate(), ["50", "101", "152"],
                 id="resnet-depth-34"),
    pytest.param(lambda: ArchSpec(family="resnext", depth=152).validate(), ["50", "101"],
                 id="resnext-depth-152"),
    pytest.param(lambda: ArchSpec(family="vgg").validate(), list(FAMILIES), id="family"),
    pytest.param(lambda: ArchSpec(denoise=DenoiseSpec(op="gaussian")).validate(), sorted(BLOCK_OPS),
                 id="denoise-op"),
    pytest.param(lambda: ArchSpec(denoise=DenoiseSpec(op="nonlocal", query_block=-1)).validate(), [">="],
                 id="denoise-query-block"),
    pytest.param(lambda: parse_arch("VGG16"), list(ARCH_CHOICES), id="parse_arch-unknown"),
]


@pytest.mark.parametrize("make,valid", BAD_SPECS)
def test_bad_spec_raises_one_line_with_choices(make, valid):
    with pytest.raises(SpecError) as err:
        make()
    message = str(err.value)
    assert message and "\n" not in message
    assert set(valid) <= _tokens(message), message


def test_parse_arch_rejects_unavailable_depths():
    for args in [("R34",), ("X152",), ("S20",), ("ResNet", 34)]:
        with pytest.raises(SpecError) as err:
            parse_arch(*args)
        message = str(err.value)
        assert "\n" not in message
        assert {"50", "101"} <= _tokens(message) or {"R50", "R101"} <= _tokens(message), message


def test_original_release_aliases():
    assert parse_arch("ResNetDenoise", 152) == ("resnet", 152, ("nonlocal", "groups"))
    assert parse_arch("ResNeXtDenoiseAll", 101) == ("resnext", 101, ("nonlocal-dot", "all"))
    assert parse_arch("ResNet", "101") == ("resnet", 101, (None, "groups"))
    assert parse_arch("R152") == ("resnet", 152, (None, "groups"))
    with pytest.raises(SpecError):
        parse_arch("ResNetDenoise")        # the original's names need -d


# ----------------------------------------------------------------------------------------
# NCHW = NHWC on a small net
# every op after each stage, and one after every block with sub-sampling
LAYOUT_CASES = ([pytest.param(DenoiseSpec(op), id=op) for op in sorted(BLOCK_OPS)]
                + [pytest.param(DenoiseSpec("nonlocal", at="all", subsample=True),
                                id="nonlocal-all-subsample")])


@pytest.mark.parametrize("denoise", LAYOUT_CASES)
def test_nchw_matches_nhwc(denoise):
    # NCHW_EXTRA_BATCH more images for NCHW: see test_denoise_ops's docstring (oneDNN)
    images = np.random.RandomState(1).uniform(-1, 1, [2 + NCHW_EXTRA_BATCH, 28, 28, 1])
    images = images.astype(np.float32)
    spec = SMALL.replace(denoise=denoise).validate()

    graph, image, logits = build_logits(spec)
    with make_session(graph) as sess:
        values = randomise(sess, variables_of(graph), seed=2)
        nhwc = sess.run(logits, {image: images[:2]})

    graph, image, logits = build_logits(spec.replace(data_format="NCHW"))
    nchw_vars = variables_of(graph)
    assert {v.op.name: v.shape.as_list() for v in nchw_vars} == \
        {n: list(a.shape) for n, a in values.items()}
    with make_session(graph) as sess:
        assign(sess, nchw_vars, values)
        nchw = sess.run(logits, {image: images})[:2]

    assert nhwc.shape == (2, 10)
    assert np.abs(nhwc[0] - nhwc[1]).max() > 1e-2, "logits do not depend on the image"
    # float32 error scales with the largest values in the computation, not with each logit:
    # the dot-product ops square the features, and with random weights the logits reach
    # 1e20, where a logit near 1e17 is the difference of much larger terms
    np.testing.assert_allclose(nchw, nhwc, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(nhwc).max())))


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("training", [False, True], ids=["frozen", "training"])
def test_batchnorm_gradient_equals_tensorflows(data_format, training):
    """nets.denoise_block.batchnorm's gradient (one multiply for frozen BN; bench/ measures it)
    equals TensorFlow's FusedBatchNormGradV3 for the input, gamma and beta."""
    from tensorpack.models import BatchNorm
    from tensorpack.tfutils.argscope import argscope
    from nets.denoise_block import batchnorm
    rng = np.random.RandomState(0)
    shape = [3, 4, 5, 5] if data_format == "NCHW" else [3, 5, 5, 4]
    with tf.Graph().as_default() as graph:
        x = tf.constant(rng.standard_normal(shape).astype(np.float32))
        w = tf.constant(rng.standard_normal(shape).astype(np.float32))
        with TowerContext("", is_training=True), argscope(BatchNorm, training=training):
            ours = batchnorm(x, data_format, name="bn")
            with tfv1.variable_scope(tfv1.get_variable_scope(), reuse=True):
                theirs = BatchNorm("bn", x, data_format=data_format)    # TensorFlow's own gradient
        params = tfv1.trainable_variables()
        grads = [tf.gradients(tf.reduce_sum(y * w), [x] + params) for y in (ours, theirs)]
        bn_grads = [op for op in graph.get_operations() if op.type.startswith("FusedBatchNormGrad")]
        assert len(bn_grads) == (2 if training else 1)
        with make_session(graph) as sess:
            sess.run(tfv1.global_variables_initializer())
            for v in tfv1.global_variables():
                sess.run(v.assign(rng.uniform(0.5, 1.5, v.shape.as_list()).astype(np.float32)))
            a, b = sess.run(grads)
    for p, q in zip(a, b):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-5)


def test_initialisation_follows_the_original():
    """Every variable's initial value as the original release draws it (its resnet_model.py;
    docs/ORIGINAL.md): convolutions He fan-out from a normal truncated at two standard
    deviations (TensorFlow 1's variance_scaling_initializer), the non-local op's theta/phi
    embeddings from N(0, 0.01), the classifier from N(0, 0.01) with zero bias, BN gamma 1 (0
    for the last BN of each residual branch and of each denoising block), beta 0, and the
    moving statistics 0 and 1."""
    spec = ArchSpec(family="small", depth=14, width=32, num_classes=10, image_size=28, image_channels=1,
                    denoise=DenoiseSpec("nonlocal"))
    graph, _, _ = build_logits(spec)
    with make_session(graph) as sess:
        with graph.as_default():
            sess.run(tfv1.global_variables_initializer())
        values = {v.op.name: sess.run(v) for v in variables_of(graph)}
    assert any("embedding_theta" in n for n in values)
    for name, w in values.items():
        if name.endswith(("embedding_theta/W", "embedding_phi/W")):
            assert abs(w.std() - 0.01) < 0.002 and np.abs(w).max() < 0.06, (name, w.std())
        elif name == "linear/W":
            assert abs(w.std() - 0.01) < 0.002, w.std()
        elif name.endswith("/W"):
            fan_out = w.shape[0] * w.shape[1] * w.shape[3]
            std = np.sqrt(2.0 / fan_out)
            # truncated at 2 sigma of the rescaled normal: |w| <= 2 std / 0.8796, and variance 2 / fan-out
            assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-5), name
            if w.size > 2000:
                assert abs(w.std() / std - 1) < 0.1, (name, w.std(), std)
        elif name == "linear/b" or name.endswith(("beta", "mean/EMA")):
            assert np.all(w == 0), name
        elif name.endswith("variance/EMA"):
            assert np.all(w == 1), name
        elif name.endswith("gamma"):
            last = name.endswith(("conv3/bn/gamma", "_denoise/conv/bn/gamma"))
            assert np.all(w == (0 if last else 1)), name

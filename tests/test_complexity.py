"""Every architecture reports parameters and FLOPs (nets/complexity.py)."""

from nets import ArchSpec, DenoiseSpec
from nets.complexity import complexity


def test_resnet50_matches_the_known_figures():
    params, flops = complexity(ArchSpec("resnet", 50))
    # the standard ResNet-50 (1000 classes): 25,557,032 trainable parameters; He et al.
    # report 3.8e9 multiply-adds without the FC and shortcut projections, 4.1e9 with them
    assert params == 25557032
    assert 4.05e9 < flops < 4.15e9


def test_denoising_flops_follow_eq1_and_the_cheaper_order():
    small = dict(family="small", depth=14, num_classes=10, image_size=28, image_channels=1, width=8)
    _, base = complexity(ArchSpec(**small))
    # group0 output: 28x28 positions (N = 784), C = 32 channels; the 1x1 conv of a block is N*C*C
    n, c = 28 * 28, 32
    conv1x1 = [n * c * c, 196 * 64 * 64, 49 * 128 * 128, 16 * 256 * 256]
    _, null = complexity(ArchSpec(denoise=DenoiseSpec("null"), **small))
    assert null - base == sum(conv1x1)
    # dot product without embedding in the cheaper order: Q (K^T V) costs 2 N C^2 per block
    _, dot = complexity(ArchSpec(denoise=DenoiseSpec("nonlocal-dot"), **small))
    cheaper = [2 * n * c * c, 2 * 196 * 64 * 64, min(2 * 49 * 128 * 128, 49 * 49 * 256),
               min(2 * 16 * 256 * 256, 16 * 16 * 512)]
    assert dot - null == sum(cheaper)
    # Gaussian: theta, phi embeddings (2 N C C/2) and N x N x (C/2 + C) products
    _, gauss = complexity(ArchSpec(denoise=DenoiseSpec("nonlocal"), **small))
    sizes = [(784, 32), (196, 64), (49, 128), (16, 256)]
    expected = sum(2 * p * ch * ch // 2 + p * p * (ch // 2 + ch) for p, ch in sizes)
    assert gauss - null == expected


def test_flops_split_by_op_type():
    """bench.run compares the time of the non-local products with their own FLOPs: the
    split adds up to the total, and only the denoising op has batched products."""
    import tensorflow as tf
    from tensorpack.tfutils.tower import TowerContext
    from nets import backbone_logits
    from nets.complexity import count_flops
    small = dict(family="small", depth=14, num_classes=10, image_size=28, image_channels=1, width=8)
    for op, has_products in ((None, False), ("nonlocal", True)):
        spec = ArchSpec(denoise=DenoiseSpec(op), **small)
        g = tf.Graph()
        with g.as_default(), TowerContext("", is_training=False):
            backbone_logits(tf.compat.v1.placeholder(tf.float32, [1, 28, 28, 1]), spec)
        split = count_flops(g, by_type=True)
        assert sum(split.values()) == count_flops(g) == complexity(spec)[1]
        assert (split["batch_matmul"] > 0) == has_products and split["conv"] > 0 and split["matmul"] == 256 * 10
        if has_products:       # the N x N x (C/2 + C) products of Eq. 1's Gaussian op
            assert split["batch_matmul"] == sum(p * p * (ch // 2 + ch) for p, ch in
                                                [(784, 32), (196, 64), (49, 128), (16, 256)])

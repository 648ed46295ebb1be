"""Infer the full architecture from a checkpoint's variable names and shapes, so that
``eval.py --load R152-Denoise.npz`` needs no architecture flags.

Checkpoints written by this project record their ArchSpec (nothing is guessed). For the
released files the names decide almost everything; what they cannot decide is logged:
- with theta/phi embeddings, Gaussian (softmax) vs dot product: the paper's default,
  Gaussian ("Our best-performing model ... which we use by default");
- without embeddings, which parameter-free op (the null, mean, median and dot-product
  blocks have the same variables, Sec. 6.1): the dot-product non-local op, the one the
  released X101-DenoiseAll uses.
"""
import re

from .spec import IMAGENET_DEPTHS, SMALL_DEPTHS, ArchSpec, DenoiseSpec, SpecError


def _blocks_per_stage(shapes):
    counts = []
    for stage in range(4):
        blocks = {int(m.group(1)) for name in shapes
                  for m in [re.match(r"group%d/block(\d+)/" % stage, name)] if m}
        counts.append(len(blocks))
    return tuple(counts)


def infer_arch(shapes, recorded=None, data_format="NHWC", log=None):
    """``shapes``: dict variable name -> shape. ``recorded``: the ArchSpec dict stored in
    the checkpoint, if any. Returns (ArchSpec, list of notes about guesses)."""
    notes = []
    if recorded:
        try:
            spec = ArchSpec.from_dict(recorded).replace(data_format=data_format)
        except (TypeError, ValueError, AttributeError) as e:
            raise SpecError("the checkpoint's architecture record does not describe a network (%s): pass the --arch "
                            "flags" % " ".join(str(e).split())) from None
        return spec.validate(), notes
    if "conv0/W" not in shapes or "linear/W" not in shapes:
        raise SpecError("the checkpoint has no conv0/W or linear/W: not a ResNet/ResNeXt of this project or the "
                        "original release; pass --arch and friends")
    k, _, in_channels, stem_width = shapes["conv0/W"]
    num_classes = shapes["linear/W"][1]
    blocks = _blocks_per_stage(shapes)
    conv2 = shapes.get("group0/block0/conv2/W")
    if conv2 is None:
        raise SpecError("the checkpoint has no group0/block0/conv2/W: unknown layout; pass --arch")
    grouped = conv2[2] != conv2[3]
    if k == 3:
        family = "small"
        n = blocks[0]
        depth = {v: d for d, v in SMALL_DEPTHS.items()}.get(n)
        if depth is None or len(set(blocks)) != 1:
            raise SpecError("small-image net with blocks %s per stage is not a known depth" % (blocks,))
        image_size = 28 if in_channels == 1 else 32
        width = stem_width
    else:
        family = "resnext" if grouped else "resnet"
        depth = {v: d for d, v in IMAGENET_DEPTHS.items()}.get(blocks)
        if depth is None:
            raise SpecError("blocks per stage %s match no ResNet depth (50, 101, 152)" % (blocks,))
        image_size, width = 224, 64

    denoise = DenoiseSpec()
    at_groups = any(re.match(r"group\d_denoise/", n) for n in shapes)
    at_all = any("/non_local/" in n for n in shapes)
    if at_groups or at_all:
        prefix = "group0_denoise/" if at_groups else "group0/block0/non_local/"
        embed = (prefix + "embedding_theta/W") in shapes
        has_1x1 = (prefix + "conv/W") in shapes
        is_bottleneck = (prefix + "conv1/W") in shapes
        if is_bottleneck:
            op = "bottleneck"
        elif embed:
            op = "nonlocal"
            notes.append("denoising blocks have theta/phi embeddings: assuming the Gaussian (softmax) non-local "
                         "op, the paper's default (dot product with embeddings has the same variables)")
        else:
            op = "nonlocal-dot"
            notes.append("denoising blocks have no embeddings: assuming the dot-product non-local op (null, mean "
                         "and median blocks have the same variables; pass --denoise to choose)")
        denoise = DenoiseSpec(op=op, at="groups" if at_groups else "all",
                              embed=embed if op in ("nonlocal", "nonlocal-dot") else None,
                              use_1x1=has_1x1 or is_bottleneck)
    spec = ArchSpec(family=family, depth=depth, num_classes=num_classes, image_size=image_size,
                    image_channels=in_channels, width=width, denoise=denoise, data_format=data_format)
    for note in notes:
        if log:
            log(note)
    return spec.validate(), notes

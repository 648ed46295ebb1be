"""What an architecture is: a small, serialisable description shared by train.py, eval.py,
checkpoints (which record it) and the inference of an architecture from a checkpoint.

Names follow the paper (Sec. 4 and 6) and the original release, whose spellings are kept
as aliases: ``--arch ResNet|ResNetDenoise|ResNeXtDenoiseAll -d 50|101|152``.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional, Tuple

# Blocks per stage (res2..res5) of the ImageNet backbones (He et al. 2016, Table 1).
IMAGENET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# ResNeXt 32x8d (Xie et al. 2017): 32 groups of 8 channels in res2, doubling per stage.
RESNEXT_CARDINALITY = 32
RESNEXT_GROUP_WIDTH = 8
# Small-image nets: 4 stages of n bottleneck blocks each, depth = 12 n + 2.
SMALL_DEPTHS = {14: 1, 26: 2, 38: 3, 50: 4}

FAMILIES = ("resnet", "resnext", "small")
PLACEMENTS = ("groups", "all")
ARCH_CHOICES = ("R50", "R101", "R152", "X50", "X101", "S14", "S26", "S38", "S50")
ORIGINAL_ARCH_ALIASES = ("ResNet", "ResNetDenoise", "ResNeXtDenoiseAll")


class SpecError(ValueError):
    """A configuration that does not describe a buildable network (one-line message)."""


@dataclass(frozen=True)
class DenoiseSpec:
    """The denoising blocks of a network (Sec. 4.1 and 4.2).

    op: a key of ``nets.denoise_ops.DENOISE_OPS`` (or 'bottleneck', the R-164 comparison
        of Fig. 7), or None for a plain backbone.
    at: 'groups' puts one block after the last residual block of res2..res5 (Sec. 6, the
        default); 'all' one after every residual block (Sec. 6.2, "DenoiseAll").
    embed: theta/phi 1x1 embeddings; None means the op's own default (Gaussian: yes, the
        paper calls it "essential"; dot product: no, "unnecessary", Sec. 4.2).
    subsample: x_j max-pooled 2x2 inside non-local ops (Sec. 6.2, after [24]).
    kernel_size: window of the local ops (bilateral, mean, median; 3x3 in Sec. 6.1).
    use_1x1, residual: the two ablation switches of Table 1.
    query_block: if > 0, the Gaussian non-local op processes query positions in chunks of
        this many, bounding the N x N weight matrix in memory (same result).
    """
    op: Optional[str] = None
    at: str = "groups"
    embed: Optional[bool] = None
    subsample: bool = False
    kernel_size: int = 3
    use_1x1: bool = True
    residual: bool = True
    query_block: int = 0

    @property
    def enabled(self):
        return self.op is not None


@dataclass(frozen=True)
class ArchSpec:
    family: str = "resnet"
    depth: int = 50
    num_classes: int = 1000
    image_size: int = 224
    image_channels: int = 3
    width: int = 64          # stem width; bottleneck widths are width * 2**stage
    denoise: DenoiseSpec = field(default_factory=DenoiseSpec)
    data_format: str = "NHWC"

    # ---- derived ----
    @property
    def blocks_per_stage(self) -> Tuple[int, ...]:
        if self.family == "small":
            return (SMALL_DEPTHS[self.depth],) * 4
        return IMAGENET_DEPTHS[self.depth]

    @property
    def name(self):
        prefix = {"resnet": "R", "resnext": "X", "small": "S"}[self.family]
        name = "%s%d" % (prefix, self.depth)
        if self.family == "small":
            name += "-w%d" % self.width
        if self.denoise.enabled:
            name += "-%s" % self.denoise.op
            if self.denoise.at == "all":
                name += "-all"
            if self.denoise.subsample:
                name += "-sub"
            if not self.denoise.use_1x1:
                name += "-no1x1"
            if not self.denoise.residual:
                name += "-noresidual"
        return name

    def validate(self):
        if self.family not in FAMILIES:
            raise SpecError("unknown architecture family %r; valid: %s" % (self.family, ", ".join(FAMILIES)))
        if self.depth not in valid_depths(self.family):
            raise SpecError("depth %r is not available for %s; valid: %s" % (
                self.depth, self.family, ", ".join(map(str, valid_depths(self.family)))))
        if self.data_format not in ("NHWC", "NCHW"):
            raise SpecError("data format %r; valid: NHWC, NCHW" % self.data_format)
        if self.num_classes < 2:
            raise SpecError("num_classes must be at least 2, got %d" % self.num_classes)
        d = self.denoise
        if d.enabled:
            from .denoise_ops import BLOCK_OPS
            if d.op not in BLOCK_OPS:
                raise SpecError("unknown denoising op %r; valid: %s" % (d.op, ", ".join(sorted(BLOCK_OPS))))
            if d.at not in PLACEMENTS:
                raise SpecError("unknown placement %r; valid: %s" % (d.at, ", ".join(PLACEMENTS)))
            if d.kernel_size < 1 or d.kernel_size % 2 == 0:
                raise SpecError("denoising kernel size must be odd and positive, got %d" % d.kernel_size)
            if d.query_block < 0:
                raise SpecError("denoising query block must be >= 0 (0: all queries at once), got %d" % d.query_block)
            if not d.use_1x1 and not d.residual:
                raise SpecError("a denoising block needs the 1x1 conv or the residual connection (or both)")
        return self

    # ---- serialisation (recorded in checkpoints so nothing is guessed at load time) ----
    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        den = DenoiseSpec(**d.pop("denoise", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecError("unknown architecture fields %s" % sorted(unknown))
        return cls(denoise=den, **d)

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


def valid_depths(family):
    if family == "small":
        return sorted(SMALL_DEPTHS)
    if family == "resnext":
        return [50, 101]
    return sorted(IMAGENET_DEPTHS)


def _check_depth(family, depth):
    if depth not in valid_depths(family):
        raise SpecError("depth %d is not available for %s; valid: %s (architectures: %s)" % (
            depth, family, ", ".join(map(str, valid_depths(family))), ", ".join(ARCH_CHOICES)))


def parse_arch(arch, depth=None):
    """'R152' / 'X101' / 'S14', or the original's 'ResNet' + depth. -> (family, depth, implied op, at)."""
    implied = (None, "groups")
    if arch in ORIGINAL_ARCH_ALIASES:
        if depth is None:
            raise SpecError("--arch %s needs -d/--depth (50, 101 or 152)" % arch)
        family = "resnext" if arch == "ResNeXtDenoiseAll" else "resnet"
        if arch == "ResNetDenoise":
            implied = ("nonlocal", "groups")
        elif arch == "ResNeXtDenoiseAll":
            implied = ("nonlocal-dot", "all")
        _check_depth(family, int(depth))
        return family, int(depth), implied
    prefixes = {"R": "resnet", "X": "resnext", "S": "small"}
    if len(arch) >= 2 and arch[0] in prefixes and arch[1:].isdigit():
        d = int(arch[1:])
        if depth is not None and int(depth) != d:
            raise SpecError("--arch %s and --depth %s disagree" % (arch, depth))
        _check_depth(prefixes[arch[0]], d)
        return prefixes[arch[0]], d, implied
    raise SpecError("unknown architecture %r; valid: %s, or the original's %s with -d" % (
        arch, ", ".join(ARCH_CHOICES), "|".join(ORIGINAL_ARCH_ALIASES)))

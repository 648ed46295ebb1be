"""Command-line flags shared by train.py and eval.py, and their translation into
``nets.ArchSpec`` and attackers. Library code takes those objects, never ``args``."""
import argparse

from attacks import make_attacker
from nets import ArchSpec, DenoiseSpec, SpecError, parse_arch
from nets.denoise_ops import BLOCK_OPS
from nets.spec import PLACEMENTS

# Defaults per data set. ImageNet: Sec. 5/6 (epsilon 16, step 1). Fashion-MNIST: epsilon
# 0.1 of the range (25.5 on the 0..255 scale), with a step of about a tenth of it.
DATASET_DEFAULTS = {
    "imagenet": dict(arch="R50", epsilon=16.0, step_size=1.0, train_attack_iter=30, image_size=224,
                     image_channels=3, num_classes=1000, batch=32),
    "fashion-mnist": dict(arch="S14", epsilon=25.5, step_size=2.55, train_attack_iter=7, image_size=28,
                          image_channels=1, num_classes=10, batch=64),
}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %d" % value)
    return value


def nonnegative_float(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %g" % value)
    return value


def add_arch_flags(parser):
    g = parser.add_argument_group("architecture (nets/)")
    g.add_argument("--arch", help="R50|R101|R152|X50|X101 (X = ResNeXt 32x8d), small-image S14|S26|S38|S50, "
                                  "or the original release's ResNet|ResNetDenoise|ResNeXtDenoiseAll with -d")
    g.add_argument("-d", "--depth", type=int, help="depth for the original release's --arch spellings")
    g.add_argument("--width", type=positive_int, default=None,
                   help="stem width of the small-image nets (bottleneck widths are width * 2^stage); default 16")
    g.add_argument("--denoise", choices=sorted(BLOCK_OPS), default=None,
                   help="denoising operation (Sec. 4.2); default none")
    g.add_argument("--denoise-at", choices=PLACEMENTS, default=None,
                   help="groups: after res2..res5 (Sec. 6 default); all: after every residual block (Sec. 6.2)")
    g.add_argument("--denoise-subsample", action="store_true", help="2x2 max-pool x_j in non-local ops (Sec. 6.2)")
    g.add_argument("--denoise-embed", choices=("auto", "yes", "no"), default="auto",
                   help="theta/phi embeddings (auto: Gaussian yes, dot product no)")
    g.add_argument("--denoise-kernel", type=int, default=3, help="window of bilateral/mean/median (default 3)")
    g.add_argument("--no-denoise-1x1", action="store_true", help="ablation of Table 1: no 1x1 conv")
    g.add_argument("--no-denoise-residual", action="store_true", help="ablation of Table 1: no residual connection")
    g.add_argument("--denoise-query-block", type=int, default=0,
                   help="Gaussian non-local in chunks of this many query positions (bounds memory)")
    g.add_argument("--data-format", choices=("auto", "NHWC", "NCHW"), default="auto",
                   help="auto: NCHW on GPUs, NHWC on CPUs (no NCHW max-pool gradient there)")


def add_attack_flags(parser, default_iter=None):
    g = parser.add_argument_group("attack (attacks/)")
    g.add_argument("--attack", choices=("pgd", "fgsm", "ifgsm", "mifgsm"), default="pgd")
    g.add_argument("--attack-epsilon", type=nonnegative_float, default=None,
                   help="L-inf radius on the 0..255 scale (ImageNet 16, Fashion-MNIST 25.5)")
    g.add_argument("--attack-step-size", type=float, default=None,
                   help="step on the 0..255 scale; the step used is max(step, epsilon/iterations)")
    g.add_argument("--attack-loss", choices=("xent", "cw"), default="xent")
    g.add_argument("--untargeted", action="store_true", help="untargeted attack (default: targeted, Sec. 6)")
    return g


def default_data_format():
    import tensorflow as tf
    return "NCHW" if tf.config.list_physical_devices("GPU") else "NHWC"


def arch_from_args(args, dataset, image_size=None, num_classes=None, image_channels=None):
    """ArchSpec from the flags and the data set's defaults (raises SpecError)."""
    defaults = DATASET_DEFAULTS[dataset]
    family, depth, (implied_op, implied_at) = parse_arch(args.arch or defaults["arch"], args.depth)
    op = args.denoise if args.denoise is not None else implied_op
    embed = {"auto": None, "yes": True, "no": False}[args.denoise_embed]
    denoise = DenoiseSpec(op=op, at=args.denoise_at or implied_at, embed=embed,
                          subsample=args.denoise_subsample, kernel_size=args.denoise_kernel,
                          use_1x1=not args.no_denoise_1x1, residual=not args.no_denoise_residual,
                          query_block=args.denoise_query_block)
    if family == "small":
        width = args.width or 16
    else:
        if args.width not in (None, 64):
            raise SpecError("--width applies to the small-image nets only (ImageNet nets have width 64)")
        width = 64
    data_format = default_data_format() if args.data_format == "auto" else args.data_format
    spec = ArchSpec(family=family, depth=depth,
                    num_classes=num_classes or defaults["num_classes"],
                    image_size=image_size or defaults["image_size"],
                    image_channels=image_channels or defaults["image_channels"],
                    width=width, denoise=denoise, data_format=data_format)
    return spec.validate()


def attacker_from_args(args, dataset, num_iter, prob_start_from_clean=0.0, restarts=1, seed=None):
    defaults = DATASET_DEFAULTS[dataset]
    eps = defaults["epsilon"] if args.attack_epsilon is None else args.attack_epsilon
    step = defaults["step_size"] if args.attack_step_size is None else args.attack_step_size
    return make_attacker(args.attack, num_iter=num_iter, epsilon=eps, step_size=step,
                         targeted=not args.untargeted, loss=args.attack_loss,
                         prob_start_from_clean=prob_start_from_clean, restarts=restarts, seed=seed)

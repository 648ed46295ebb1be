"""Command-line flags shared by train.py and eval.py, parsed in one place, and their
translation into ``nets.ArchSpec`` and attackers with every default taken from the chosen
preset (config/presets.py). Library code takes those objects, never ``args``."""
import argparse
import math

from attacks import ALL_ATTACKS, ATTACKERS, MEMBERS, THREATS, make_attacker
from attacks.losses import LOSSES
from data.datasets import DATASET_SHAPES
from nets import ArchSpec, DenoiseSpec, SpecError, parse_arch
from nets.denoise_ops import BLOCK_OPS
from nets.spec import PLACEMENTS

from .presets import PRESETS, preset_for

DATASETS = ("imagenet", "fashion-mnist")


class FlagError(ValueError):
    """Flags that cannot work together or with this run (one line naming the flags and the fix)."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error reported as one line on stderr, ``prog: error: <the
    flag and what is wrong> (...)``, and exit status 2. (argparse prints the whole usage
    first, dozens of lines for these programs, which push the message out of sight.)"""

    def error(self, message):
        self.exit(2, "%s: error: %s (%s --help lists every flag)\n" % (self.prog, " ".join(str(message).split()),
                                                                      self.prog))


def _number(kind, text, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be %s, got %r" % (what, text)) from None


def positive_int(text):
    value = _number(int, text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %d" % value)
    return value


def nonnegative_int(text):
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %d" % value)
    return value


def seed_int(text):
    """A seed in [0, 2^31): TensorFlow's seeds and the attacks' per-image draws take int32."""
    value = nonnegative_int(text)
    if value >= 2 ** 31:
        raise argparse.ArgumentTypeError("must be < 2^31 (2147483648), got %d" % value)
    return value


def nonnegative_float(text):
    """A finite number >= 0 (infinity and NaN are refused: an epsilon of inf would fill the
    adversarial images with NaN)."""
    value = _number(float, text, "a number >= 0")
    if not (value >= 0 and math.isfinite(value)):   # also NaN
        raise argparse.ArgumentTypeError("must be a finite number >= 0, got %g" % value)
    return value


def positive_float(text):
    value = _number(float, text, "a number > 0")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a finite number > 0, got %g" % value)
    return value


def probability(text):
    value = _number(float, text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1], got %g" % value)
    return value


def iteration_list(text):
    """Comma-separated attack iteration counts >= 0 ("0,10,100"); returns the text."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items or not all(x.isdigit() for x in items):
        raise argparse.ArgumentTypeError("must be comma-separated iteration counts >= 0 such as 0,10,100 "
                                         "(0: clean), got %r" % (text,))
    return text


def iterations(text):
    """The sorted, distinct iteration counts of an ``iteration_list``."""
    return sorted({int(x) for x in str(text).split(",") if x.strip()})


def epoch_list(text):
    """Comma-separated epochs >= 0 ("35,70,95"); returns the text."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    for x in items:
        value = _number(float, x, "comma-separated epochs >= 0 such as 35,70,95")
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError("must be comma-separated epochs >= 0 such as 35,70,95, got %r" % text)
    return text


# ---------------------------------------------------------------------------------------- presets
def add_preset_flags(parser):
    g = parser.add_argument_group("recipe")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the named recipe every default below comes from (config/presets.py): imagenet (the "
                        "paper's), fashion-mnist, demo (scripts/demo.sh), tiny (tests); default: the data set's")
    return g


def choose_preset(args, dataset):
    """The preset of this run: --preset (which must be for this data set), else the data
    set's default."""
    if args.preset is not None and PRESETS[args.preset].dataset != dataset:
        raise FlagError("--preset %s is a recipe for %s, but the data is %s: pass a preset for %s (%s) or other "
                        "--data" % (args.preset, PRESETS[args.preset].dataset, dataset, dataset,
                                    ", ".join(n for n, p in sorted(PRESETS.items()) if p.dataset == dataset)))
    return preset_for(args.preset, dataset)


def preset_dataset(args):
    """The data set named by --preset, or None."""
    return PRESETS[args.preset].dataset if args.preset else None


def or_preset(value, preset, field):
    """A flag's value, or the preset's when the flag was not given (None)."""
    return getattr(preset, field) if value is None else value


# ---------------------------------------------------------------------------------------- architecture
ARCH_FLAGS = ("arch", "depth", "width", "denoise", "denoise_at", "denoise_subsample", "denoise_embed",
              "denoise_kernel", "no_denoise_1x1", "no_denoise_residual")


def add_arch_flags(parser):
    g = parser.add_argument_group("architecture (nets/)")
    g.add_argument("--arch", help="R50|R101|R152|X50|X101 (X = ResNeXt 32x8d), small-image S14|S26|S38|S50, "
                                  "or the original release's ResNet|ResNetDenoise|ResNeXtDenoiseAll with -d "
                                  "(default: the preset's)")
    g.add_argument("-d", "--depth", type=positive_int, help="depth for the original release's --arch spellings")
    g.add_argument("--width", type=positive_int, default=None,
                   help="stem width of the small-image nets (bottleneck widths are width * 2^stage); default: the "
                        "preset's (fashion-mnist 16)")
    g.add_argument("--denoise", choices=sorted(BLOCK_OPS), default=None,
                   help="denoising operation (Sec. 4.2); default none")
    g.add_argument("--denoise-at", choices=PLACEMENTS, default=None,
                   help="groups: after res2..res5 (Sec. 6 default); all: after every residual block (Sec. 6.2)")
    g.add_argument("--denoise-subsample", action="store_true", help="2x2 max-pool x_j in non-local ops (Sec. 6.2)")
    g.add_argument("--denoise-embed", choices=("auto", "yes", "no"), default=None,
                   help="theta/phi embeddings (auto, the default: Gaussian yes, dot product no)")
    g.add_argument("--denoise-kernel", type=positive_int, default=None,
                   help="window of bilateral/mean/median (default 3)")
    g.add_argument("--no-denoise-1x1", action="store_true", help="ablation of Table 1: no 1x1 conv")
    g.add_argument("--no-denoise-residual", action="store_true", help="ablation of Table 1: no residual connection")
    g.add_argument("--denoise-query-block", type=nonnegative_int, default=0,
                   help="Gaussian non-local in chunks of this many query positions (bounds memory; 0: all at once)")
    g.add_argument("--data-format", choices=("auto", "NHWC", "NCHW"), default="auto",
                   help="auto: NCHW on GPUs, NHWC on CPUs (no NCHW max-pool gradient there)")


def arch_flags_given(args):
    """True if any flag that describes the architecture was given (eval.py then builds the
    network from the flags instead of the checkpoint's record)."""
    return any(getattr(args, name) not in (None, False) for name in ARCH_FLAGS)


def default_data_format():
    import tensorflow as tf
    return "NCHW" if tf.config.list_physical_devices("GPU") else "NHWC"


def data_format_of(args):
    return default_data_format() if args.data_format == "auto" else args.data_format


def arch_from_args(args, preset, image_size=None, num_classes=None, image_channels=None):
    """ArchSpec from the flags, with the preset's defaults (raises SpecError)."""
    size, channels, classes = DATASET_SHAPES[preset.dataset]
    family, depth, (implied_op, implied_at) = parse_arch(args.arch or preset.arch, args.depth)
    op = args.denoise if args.denoise is not None else implied_op
    embed = {None: None, "auto": None, "yes": True, "no": False}[args.denoise_embed]
    denoise = DenoiseSpec(op=op, at=args.denoise_at or implied_at, embed=embed,
                          subsample=args.denoise_subsample, kernel_size=args.denoise_kernel or 3,
                          use_1x1=not args.no_denoise_1x1, residual=not args.no_denoise_residual,
                          query_block=args.denoise_query_block)
    if family == "small":
        width = args.width or preset.width or 16
    else:
        if args.width not in (None, 64):
            raise SpecError("--width applies to the small-image nets only (ImageNet nets have width 64)")
        width = 64
    spec = ArchSpec(family=family, depth=depth,
                    num_classes=num_classes or classes,
                    image_size=image_size or size,
                    image_channels=image_channels or channels,
                    width=width, denoise=denoise, data_format=data_format_of(args))
    return spec.validate()


# ---------------------------------------------------------------------------------------- attacks
def add_attack_flags(parser, evaluation=False):
    """``evaluation``: eval.py also offers AutoAttack and its members (train.py trains with
    the paper's attacks)."""
    g = parser.add_argument_group("attack (attacks/)")
    g.add_argument("--attack", choices=ALL_ATTACKS if evaluation else tuple(ATTACKERS), default=None,
                   help="pgd (the paper's), fgsm, ifgsm, mifgsm" + (
                       "; AutoAttack's members apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square (each untargeted; "
                       "Square's strength is its query budget, its window schedule rescaled to it as in the Square "
                       "paper), or autoattack, the ensemble (--aa-version)" if evaluation else ""))
    g.add_argument("--norm", choices=tuple(THREATS), default="linf",
                   help="threat model: an L-infinity (the paper's) or L2 ball of radius --attack-epsilon, "
                        "intersected with the image range")
    g.add_argument("--attack-epsilon", type=nonnegative_float, default=None,
                   help="radius on the 0..255 pixel scale, for either norm (an L2 epsilon of 255 is 1.0 on the "
                        "[0, 1] scale); default: the preset's L-inf epsilon (ImageNet 16, Fashion-MNIST 25.5); "
                        "--norm l2 needs it given")
    g.add_argument("--attack-step-size", type=positive_float, default=None,
                   help="step on the 0..255 scale; the step used is max(step, epsilon/iterations); default: the "
                        "preset's (L2: 2.5 epsilon / iterations, Madry et al.)")
    g.add_argument("--attack-loss", choices=LOSSES, default=None,
                   help="objective of pgd/fgsm/ifgsm/mifgsm (default xent, the paper's; AutoAttack's members have "
                        "their own)")
    g.add_argument("--untargeted", action="store_true", help="untargeted attack (default: targeted, Sec. 6)")
    g.add_argument("--attack-precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="precision of the attack iterations (weights stay float32; for GPUs). train.py: the "
                        "training attack only, evaluation stays fp32; eval.py: its attacks")
    g.add_argument("--attack-loss-scale", type=nonnegative_float, default=None,
                   help="fp16 per-image loss-scale target (default 1024; 0: no scaling)")
    g.add_argument("--attack-xla", action="store_true", help="compile each attack iteration with XLA (same scope "
                                                             "as --attack-precision)")
    if evaluation:
        g.add_argument("--eot", type=positive_int, default=None, metavar="N",
                       help="expectation over transformation (Athalye et al., ICML 2018): every gradient of a "
                            "gradient attack averaged over N draws of a randomised model (default 1; AutoAttack's "
                            "rand version 20); a deterministic model gives the same gradient for any N")
    return g


def attack_epsilon(args, preset):
    """The radius (0..255 scale): the flag, or the preset's L-inf epsilon."""
    if args.attack_epsilon is None and args.norm != "linf":
        raise FlagError("--norm %s needs --attack-epsilon (on the 0..255 scale; the presets' epsilons are L-inf radii)"
                        % args.norm)
    return preset.epsilon if args.attack_epsilon is None else args.attack_epsilon


def attack_step(args, preset, num_iter):
    """The step flag, or its default: the preset's for L-inf; 2.5 epsilon / iterations (at most
    epsilon) for L2, Madry et al.'s choice."""
    if args.attack_step_size is not None:
        return args.attack_step_size
    if args.norm == "linf":
        return preset.step_size
    eps = attack_epsilon(args, preset)
    return min(eps, 2.5 * eps / max(num_iter, 1)) if eps > 0 else 1.0


def attacker_from_args(args, preset, num_iter, prob_start_from_clean=0.0, restarts=1, seed=None,
                       precision_flags=False, per_image_seed=None, num_classes=None):
    """``precision_flags``: apply --attack-precision/--attack-loss-scale/--attack-xla (train.py's
    training attacker, eval.py's attackers); otherwise an fp32 attack without XLA.
    ``per_image_seed``: evaluations' stateless per-image draws (attacks/draws.py)."""
    if args.attack_loss_scale is not None and args.attack_precision != "fp16":
        raise FlagError("--attack-loss-scale applies to fp16 attacks only (bf16 has float32's range): add "
                        "--attack-precision fp16 or drop it")
    fast = dict(precision=args.attack_precision, loss_scale=args.attack_loss_scale, xla=args.attack_xla) \
        if precision_flags else {}
    eps = attack_epsilon(args, preset)
    eot = getattr(args, "eot", None) or 1
    kind = args.attack or "pgd"            # train.py leaves --attack unset so --method can tell it was not given
    if kind in MEMBERS:
        # step-size free (APGD, FAB) or gradient-free (Square); they count misclassification
        check_member_flags(args, "--attack %s" % kind)
        if kind == "square" and getattr(args, "eot", None):
            raise FlagError("--attack square uses no gradient: --eot applies to gradient attacks, drop it")
        return make_attacker(kind, num_iter=num_iter, epsilon=eps, step_size=None, norm=args.norm,
                             targeted=False, restarts=restarts, per_image_seed=0 if per_image_seed is None
                             else per_image_seed, precision=args.attack_precision, eot=eot, num_classes=num_classes)
    step = attack_step(args, preset, num_iter)
    if num_iter > 0:                 # a clean evaluation takes no step
        check_step_size(args.attack_step_size, step, eps, preset)
    return make_attacker(kind, num_iter=num_iter, epsilon=eps, step_size=step, norm=args.norm,
                         targeted=not args.untargeted, loss=args.attack_loss or "xent",
                         prob_start_from_clean=prob_start_from_clean, restarts=restarts, seed=seed,
                         per_image_seed=per_image_seed, eot=eot, **fast)


def check_member_flags(args, job):
    """AutoAttack and its members choose their own steps and objectives and run without
    XLA or loss scaling: a flag that would change them is refused, naming ``job``."""
    for given, flag, why in ((args.attack_step_size is not None, "--attack-step-size", "chooses its own steps"),
                             (args.attack_loss is not None, "--attack-loss", "has its own objectives"),
                             (args.attack_xla, "--attack-xla", "runs without XLA"),
                             (args.attack_loss_scale is not None, "--attack-loss-scale", "runs without loss scaling")):
        if given:
            raise FlagError("%s %s: drop %s" % (job, why, flag))


def check_step_size(given, step, eps, preset):
    """The attack step (0..255 scale) against epsilon. The step used is max(step,
    epsilon/iterations) (Sec. 6.1: 1, and epsilon/10 = 1.6 for 10 iterations), and
    epsilon/iterations never exceeds epsilon, so the used step exceeds epsilon exactly when
    the step flag (or its default, when only epsilon was changed) does: every step would
    then jump past the epsilon ball and be clipped back to its surface."""
    from attacks import AttackError
    if eps > 0 and step > eps:
        if given is None:
            raise AttackError("--attack-epsilon %g is smaller than the default attack step %g of the %s preset: also "
                              "pass --attack-step-size <= %g, e.g. %g (epsilon/10)" % (eps, step, preset.name, eps,
                                                                                       eps / 10))
        raise AttackError("--attack-step-size %g is larger than --attack-epsilon %g (0..255 scale), so every step "
                          "would overshoot the epsilon ball: pass a step <= %g (Sec. 6.1: 1 at epsilon 16; the step "
                          "used is max(step, epsilon/iterations), never above epsilon for a valid step)" % (
                              step, eps, eps))


def batch_per_worker(batch, total_batch, workers, default):
    """Images per worker from --batch (per worker) or --total-batch (over all workers)."""
    if total_batch is None:
        return batch or default
    if batch is not None:
        raise FlagError("--batch (images per worker) and --total-batch (images over all workers) both given: "
                        "pass only one of them")
    if total_batch % workers:
        lower, upper = total_batch // workers * workers, (total_batch // workers + 1) * workers
        raise FlagError("--total-batch %d does not divide across %d workers: pass a multiple of %d (%s%d) or "
                        "--batch (images per worker)" % (total_batch, workers, workers,
                                                         "%d or " % lower if lower else "", upper))
    return total_batch // workers

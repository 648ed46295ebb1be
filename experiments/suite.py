"""The paper's experiments, at Fashion-MNIST scale: which models are trained, how, and how
they are evaluated. Every model gets the same recipe, budget and seeds; the only
difference between two rows is the one the paper's row names (no per-variant tuning).

Rows and where they come from in the paper:
  Fig. 7   baseline; +4 bottleneck; +4 null (1x1 only); +4 denoise: 3x3 mean, 3x3 median,
           bilateral (Gaussian), non-local dot product, non-local Gaussian.
  Table 1  non-local Gaussian without the 1x1 conv; without the residual connection.
  Sec. 6.2 "Pushing the envelope": denoising after every residual block with the 2x2
           sub-sampling of x_j, against 4 blocks on the same (deeper) backbone.
  Table 3  baseline and non-local Gaussian trained on clean images, evaluated clean.
  Table 2  black-box: transfer attacks crafted on a separately trained baseline, scored
           with the CAAD 2018 "all-or-nothing" criterion.
"""
import dataclasses
from typing import Tuple

from config.presets import PRESETS


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str                      # directory name and table key
    label: str                     # the paper's row name
    groups: Tuple[str, ...]        # which tables/figures it belongs to
    arch_flags: Tuple[str, ...] = ()
    clean_training: bool = False   # Table 3: --attack-iter 0
    paper: dict = dataclasses.field(default_factory=dict)   # the paper's figures for this row


# The paper's numbers (ImageNet, ResNet-152, epsilon 16), for the tables beside ours. Fig. 7
# is a plot; its values are read off it only where the text states them.
VARIANTS = (
    Variant("baseline", "R baseline", ("fig7", "blackbox"), (),
            paper={"pgd10": 52.5, "pgd2000": 39.2, "clean": 62.32, "all_or_nothing": 43.1}),
    Variant("bottleneck", "+4 bottleneck", ("fig7",), ("--denoise", "bottleneck")),
    Variant("null", "+4 denoise: null (1x1 only)", ("fig7", "blackbox"), ("--denoise", "null"),
            paper={"all_or_nothing": 44.1}),
    Variant("mean", "+4 denoise: 3x3 mean", ("fig7",), ("--denoise", "mean")),
    Variant("median", "+4 denoise: 3x3 median", ("fig7",), ("--denoise", "median")),
    Variant("bilateral", "+4 denoise: bilateral, Gaussian", ("fig7",), ("--denoise", "bilateral")),
    Variant("nonlocal-dot", "+4 denoise: non-local, dot product", ("fig7", "blackbox"),
            ("--denoise", "nonlocal-dot"), paper={"all_or_nothing": 46.2}),
    Variant("nonlocal", "+4 denoise: non-local, Gaussian", ("fig7", "table1", "blackbox"),
            ("--denoise", "nonlocal"),
            paper={"pgd10": 55.7, "pgd100": 45.5, "pgd2000": 42.6, "clean": 65.30, "all_or_nothing": 46.4}),
    Variant("nonlocal-no1x1", "non-local, Gaussian, removing 1x1", ("table1",),
            ("--denoise", "nonlocal", "--no-denoise-1x1"), paper={"pgd10": 52.1, "pgd100": 36.8}),
    Variant("nonlocal-noresidual", "non-local, Gaussian, removing residual", ("table1",),
            ("--denoise", "nonlocal", "--no-denoise-residual"), paper={"pgd10": "NaN", "pgd100": "NaN"}),
    Variant("clean-baseline", "R baseline, clean training", ("table3",), (), clean_training=True,
            paper={"clean": 78.91}),
    Variant("clean-nonlocal", "+4 denoise: non-local, Gaussian, clean training", ("table3",),
            ("--denoise", "nonlocal"), clean_training=True, paper={"clean": 79.08}),
    # Last: the costliest models, and the feature figures do not need them (runner.plan_jobs).
    # Sec. 6.2 on a backbone with 2 residual blocks per stage, so "after every residual
    # block" (8 blocks) differs from "after every stage" (4 blocks).
    Variant("deep-nonlocal", "S26 +4 denoise: non-local, Gaussian", ("all",),
            ("--arch", "S26", "--denoise", "nonlocal")),
    Variant("deep-nonlocal-all", "S26 +all denoise: non-local, Gaussian, sub-sampled", ("all", "blackbox"),
            ("--arch", "S26", "--denoise", "nonlocal", "--denoise-at", "all", "--denoise-subsample"),
            paper={"all_or_nothing": 49.5}),
)

# The black-box source: the baseline recipe with a seed no suite model uses (Sec. 6.2
# transfers from models the defender never saw).
SOURCE = Variant("source-baseline", "transfer source (baseline, separate seed)", ("source",), ())
SOURCE_SEED = 101


@dataclasses.dataclass(frozen=True)
class TransferAttack:
    """One black-box attacker: crafted white-box on SOURCE, then evaluated on every model.
    CAAD's black-box epsilon is twice the training epsilon (32 vs 16, Sec. 6.2)."""
    name: str
    flags: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much compute every model gets. ``full`` is the published suite. The training recipe
    is a preset of config/presets.py (``preset``), named to train.py; the fields below repeat
    its values (``from_preset``) so that budget.json records what a run used."""
    name: str
    steps: int                  # SGD steps of batch ``batch``
    batch: int
    train_attack_iter: int      # PGD iterations in training (Sec. 5 uses 30 on ImageNet)
    base_lr: float
    lr_decay_at: float          # fraction of the run where the learning rate drops 10x
    seeds: Tuple[int, ...]
    # White-box evaluation: iterations -> number of test images (the first N of the test set,
    # the same for every model). None = the whole test set.
    white_box: Tuple[Tuple[int, object], ...]
    black_box_images: int
    epsilon: float = 25.5       # 0.1 of the range, on the 0..255 scale
    width: int = 8
    feature_images: int = 256   # images for the feature-noise measurement
    transfer_count: int = 5     # how many of the transfer attacks below
    # train.py checkpoints at epoch ends: the run is cut into this many "epochs" of
    # steps / checkpoints steps, so a killed training resumes instead of starting again.
    # The schedule is per step (training/schedule.py), so the cut changes nothing else.
    checkpoints: int = 4
    preset: str = dataclasses.field(default="demo", metadata={"recorded": False})

    def __post_init__(self):
        if self.steps % self.checkpoints:
            raise ValueError("budget %s: %d steps do not split into %d checkpoints" % (
                self.name, self.steps, self.checkpoints))

    def transfer_attacks(self):
        e2 = "%g" % (2 * self.epsilon)
        return self._transfer_attacks(e2)[:self.transfer_count]

    @staticmethod
    def _transfer_attacks(e2):
        return (
            TransferAttack("pgd10-targeted", ("--attack", "pgd", "--attack-iter", "10")),
            TransferAttack("pgd10-untargeted-2eps", ("--attack", "pgd", "--attack-iter", "10", "--untargeted",
                                                      "--attack-epsilon", e2)),
            TransferAttack("pgd10-cw-untargeted-2eps", ("--attack", "pgd", "--attack-iter", "10", "--untargeted",
                                                         "--attack-loss", "cw", "--attack-epsilon", e2)),
            TransferAttack("mifgsm10-untargeted-2eps", ("--attack", "mifgsm", "--attack-iter", "10",
                                                         "--untargeted", "--attack-epsilon", e2)),
            TransferAttack("fgsm-untargeted-2eps", ("--attack", "fgsm", "--attack-iter", "1", "--untargeted",
                                                     "--attack-epsilon", e2)),
        )


def from_preset(name, preset, **evaluation):
    """A budget whose training recipe is the preset ``preset`` (one pass of its steps)."""
    p = PRESETS[preset]
    steps = p.steps_per_epoch * p.epochs
    return Budget(name, steps=steps, batch=p.batch, train_attack_iter=p.train_attack_iter, base_lr=p.base_lr,
                  lr_decay_at=p.lr_decay_epochs[0] / p.epochs, epsilon=p.epsilon, width=p.width, preset=preset,
                  **evaluation)


BUDGETS = {
    # Meant for about 6 hours on a 2-core CPU. Measured (docs/RESULTS.md, "What the run
    # cost"): on a 2-core AVX-512 machine the whole suite, 3 seeds of every model with the
    # black-box source, the transfer attacks and the feature figures (277 jobs), took 5.8
    # hours, and the longest training run 9 min; on the AVX2 machine of the first run
    # (docs/archive), with other work beside it, 2 seeds took about 15 hours. The Gaussian
    # non-local, median and bilateral models cost 4-7x the baseline per step at 28x28, so the
    # long attacks run on subsets (PGD-100: 500 images, PGD-1000: 100).
    # The recipe is the README demo's (the demo preset): S14 of width 8, PGD-3 training, 400
    # steps of 128.
    "full": from_preset("full", "demo", seeds=(1, 2, 3),
                        white_box=((0, None), (10, None), (100, 500), (1000, 100)), black_box_images=2000),
    # The test suite's budget: a few steps on a slice, to exercise every code path.
    "tiny": from_preset("tiny", "tiny", seeds=(1,), white_box=((0, 32), (2, 32), (3, 16)), black_box_images=32,
                        feature_images=16, transfer_count=2, checkpoints=1),
}


def select_variants(names):
    """Variants by name (None: all); unknown names raise ValueError naming the valid ones."""
    if not names:
        return VARIANTS
    by_name = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError("unknown variant(s) %s; valid: %s" % (", ".join(unknown), ", ".join(by_name)))
    return tuple(by_name[n] for n in names)

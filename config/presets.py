"""Named recipes: every default of train.py and eval.py comes from one of these, chosen with
``--preset`` (default: the data set's own). Each is written down once here; the programs,
``scripts/demo.sh``, the reproduction harness and the tests use them by name, and run.json
records the preset and every value a run used.

- ``imagenet``: Sec. 5 and 6 verbatim (with Goyal et al.'s large-minibatch recipe).
- ``fashion-mnist``: the default on the embedded data set, a short schedule for one CPU
  machine of the same shape (warm-up, step decays).
- ``demo``: README's main job (scripts/demo.sh): a smaller net and attack, one pass of 400
  steps.
- ``repro``: the reproduction suite's recipe: the demo's, in whole epochs (how many is chosen
  on held-out images by experiments/schedule.py).
- ``tiny``: the tests' budget: a few steps, to exercise every code path.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Preset:
    name: str
    dataset: str                       # "imagenet" | "fashion-mnist"
    # ---- architecture (nets/) ----
    arch: str
    width: Optional[int]               # small-image nets only
    # ---- the threat model, on the 0..255 scale (Sec. 6) ----
    epsilon: float
    step_size: float                   # the step taken is max(step, epsilon / iterations)
    # ---- training (Sec. 5) ----
    batch: int                         # images per worker
    epochs: int
    steps_per_epoch: Optional[int]     # None: training images / total batch
    base_lr: float                     # per 256 images (Goyal et al.)
    warmup_epochs: float
    lr_decay_epochs: Tuple[float, ...]
    train_attack_iter: int             # PGD iterations in training (0: clean training, Table 3)
    prob_start_from_clean: float = 0.2     # Sec. 5: 20% of batches
    label_smoothing: float = 0.1           # Sec. 5
    weight_decay: float = 1e-4
    momentum: float = 0.9                  # Nesterov (Goyal et al.)
    keep_checkpoints: int = 3
    seed: Optional[int] = None
    # ---- evaluation during training ----
    eval_attack_iters: str = "0,10"        # every epoch (0 = clean)
    eval_long_attack_iter: int = 100       # every eval_long_every epochs and in the last eval_long_last
    eval_long_every: int = 10
    eval_long_last: int = 1
    eval_limit: Optional[int] = None
    eval_batch: int = 50
    # ---- eval.py ----
    attack_iter: str = "0,10"              # white-box strengths evaluated (batch: eval_batch)
    eval_seed: int = 0                     # the per-image draws' seed
    predict_batch: int = 32                # black-box predictions

    def values(self):
        return dataclasses.asdict(self)


IMAGENET = Preset(
    name="imagenet", dataset="imagenet", arch="R50", width=None,
    # Sec. 6: epsilon 16, step 1 (1.6 for 10 iterations by the max rule)
    epsilon=16.0, step_size=1.0,
    # Sec. 5: 32 images per GPU; 110 epochs, /10 at 35, 70, 95; 30-step PGD; Goyal et al.'s
    # 5-epoch warm-up when the scaled learning rate exceeds 0.1
    batch=32, epochs=110, steps_per_epoch=None, base_lr=0.1, warmup_epochs=5.0,
    lr_decay_epochs=(35.0, 70.0, 95.0), train_attack_iter=30,
    eval_batch=50)

FASHION_MNIST = Preset(
    name="fashion-mnist", dataset="fashion-mnist", arch="S14", width=16,
    # 0.1 of the range, a step of a tenth of it
    epsilon=25.5, step_size=2.55,
    batch=64, epochs=4, steps_per_epoch=None, base_lr=0.1, warmup_epochs=0.0, lr_decay_epochs=(3.0,),
    train_attack_iter=7, eval_batch=250)

DEMO = dataclasses.replace(
    FASHION_MNIST, name="demo", width=8,
    # PGD-3 training, batch 128, one pass of 400 steps with the learning rate /10 at 75%
    batch=128, epochs=1, steps_per_epoch=400, base_lr=0.4, lr_decay_epochs=(0.75,), train_attack_iter=3,
    eval_attack_iters="0", eval_limit=1000, eval_long_attack_iter=0, seed=1)

# The reproduction suite's recipe (experiments/): the demo's net, attack and learning rate, in
# whole epochs of the training images left after the suite's validation hold-out; the number
# of epochs (and the drop at 75% of them) is chosen by experiments/schedule.py and passed as
# flags. Each epoch ends with a clean evaluation on the held-out images.
REPRO = dataclasses.replace(DEMO, name="repro", steps_per_epoch=None)
TINY = dataclasses.replace(
    FASHION_MNIST, name="tiny", width=4,
    batch=16, epochs=1, steps_per_epoch=3, base_lr=0.1, lr_decay_epochs=(0.75,), train_attack_iter=1,
    eval_attack_iters="0", eval_limit=32, eval_long_attack_iter=0, eval_batch=16, seed=1)

PRESETS = {p.name: p for p in (IMAGENET, FASHION_MNIST, DEMO, REPRO, TINY)}
DEFAULT_FOR_DATASET = {"imagenet": "imagenet", "fashion-mnist": "fashion-mnist"}


def preset_for(name, dataset):
    """The preset ``name``, or the data set's default with ``name`` None."""
    return PRESETS[name or DEFAULT_FOR_DATASET[dataset]]

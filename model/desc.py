"""The tensorpack ``ModelDesc`` of adversarial training (Sec. 5) and evaluation (Sec. 6).

Training tower: "For each mini-batch, we use PGD to generate adversarial images for that
mini-batch. Then we perform a one-step SGD on these perturbed images ... Our SGD update is
based exclusively on adversarial images; the mini-batch contains no clean images." That is
the default training method; model/methods.py has the others (FGSM-RS, N-FGSM, free, TRADES).
Inference towers (one per attack strength, named after it) build the same attack with
their own attacker and emit per-image metrics.
"""
import tensorflow as tf
from tensorpack import ModelDesc
from tensorpack.models import regularize_cost
from tensorpack.tfutils.summary import add_moving_summary
from tensorpack.tfutils.tower import get_current_tower_context

from attacks import NoAttack
from nets import FAST

from .graph import build_tower, network
from .methods import AdversarialTraining, FreeOptimizer, FreeTraining

tfv1 = tf.compat.v1


class AdvModel(ModelDesc):
    """Args:
        arch: nets.ArchSpec.
        train_attacker: the attacker of the training tower (NoAttack: clean training, Table 3).
        method: the training method (model/methods.py); default: AdversarialTraining(train_attacker).
        eval_attackers: dict tower name -> attacker for inference towers.
        label_smoothing: Sec. 5: "A label smoothing [19] of 0.1 is used."
        weight_decay: 1e-4 on conv and FC weights (``*/W``) only, not on BN or biases.
        momentum, nesterov: the optimizer (Goyal et al.: Nesterov momentum 0.9).
        initial_lr: value the learning-rate variable starts at (a callback schedules it).
        gradients: which gradient implementations the graphs carry (nets/gradients.py).
    """

    def __init__(self, arch, train_attacker=None, eval_attackers=None, label_smoothing=0.1,
                 weight_decay=1e-4, momentum=0.9, nesterov=True, initial_lr=0.1, gradients=FAST, method=None):
        self.arch = arch
        self.gradients = gradients
        self.train_attacker = train_attacker or NoAttack()
        self.method = method if method is not None else AdversarialTraining(self.train_attacker)
        self.eval_attackers = dict(eval_attackers or {})
        self.label_smoothing = label_smoothing
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.nesterov = nesterov
        self.initial_lr = initial_lr

    def inputs(self):
        s, c = self.arch.image_size, self.arch.image_channels
        # uint8 BGR pixels 0..255, NHWC, as decoded (the original's input convention).
        return [tf.TensorSpec([None, s, s, c], tf.uint8, "input"),
                tf.TensorSpec([None], tf.int32, "label")]

    def logits(self, image, training):
        """The network on model-space images (model.graph.network), sharing variables."""
        return network(self.arch, training=training, gradients=self.gradients)(image)

    def attacker_for_tower(self, ctx):
        if ctx.is_training:
            return self.train_attacker
        return self.eval_attackers.get(ctx.name, NoAttack())

    def build_graph(self, image, label):
        ctx = get_current_tower_context()
        if not ctx.is_training:
            build_tower(self.arch, image, label, self.attacker_for_tower(ctx), training=False, gradients=self.gradients)
            return None
        tower, extra = self.method.tower(
            self.arch, image, label,
            lambda *a, **k: build_tower(*a, gradients=self.gradients, **k),
            lambda arch, training: network(arch, training=training, gradients=self.gradients))

        onehot = tf.one_hot(label, self.arch.num_classes)
        loss = tfv1.losses.softmax_cross_entropy(onehot, tower.logits, label_smoothing=self.label_smoothing,
                                                 loss_collection=None)
        if extra is not None:
            loss = loss + extra
        loss = tf.identity(loss, name="xentropy_loss")
        # SGD weight decay lambda * w is the gradient of lambda * sum(w^2) / 2 = lambda * l2_loss.
        wd = regularize_cost(".*/W", lambda w: self.weight_decay * tf.nn.l2_loss(w), name="wd_cost")
        total = tf.add_n([loss, wd], name="cost")
        add_moving_summary(loss, wd, total,
                           tf.reduce_mean(tower.metrics["top1_error"], name="train_top1_error"),
                           tf.reduce_mean(tower.metrics["attack_success"], name="train_attack_success"))
        return total

    def optimizer(self):
        lr = tfv1.get_variable("learning_rate", initializer=float(self.initial_lr), trainable=False)
        tfv1.summary.scalar("learning_rate-summary", lr)
        opt = tfv1.train.MomentumOptimizer(lr, self.momentum, use_nesterov=self.nesterov)
        if isinstance(self.method, FreeTraining):
            return FreeOptimizer(opt, self.method)
        return opt

"""How the training tower turns a minibatch into a loss: the paper's PGD training (Sec. 5) and
the cheaper methods the field has trained robust models with since (train.py --method).

- ``AdversarialTraining(attacker)``: the SGD step sees the attacker's images only (Sec. 5:
  "Our SGD update is based exclusively on adversarial images"). PGD (the paper's), FGSM-RS
  (Wong et al. 2020) and N-FGSM (de Jorge et al. 2022) are this with another attacker
  (attacks/iterative.py, attacks/single_step.py).
- ``Trades(attacker, beta)``: CE(f(x), y) + beta KL(f(x) || f(x')) (Zhang et al. 2019, Eq. 5),
  x' from attacks/trades.py; both passes with BN in training mode, as the authors' code runs
  them.
- ``FreeTraining(threat, replays, total_batch, rank)``: Shafahi et al. 2019 (Algorithm 1):
  every minibatch is replayed ``replays`` times (the input pipeline repeats it:
  training/trainer.py), the image fed is x + delta with delta a variable that carries over
  between replays and minibatches, and the backward pass that gives the weights' gradient
  also gives delta's: delta <- P(delta + epsilon sign(grad_x)), one signed step of the full
  radius (their step), projected onto the ball. No extra pass at all; ``FreeOptimizer``
  applies both updates. delta is [total batch, ...]: each rank uses and updates its own rows
  (the images of its own shard), and the rows are gathered before each checkpoint, so a
  resumed run (even on another number of workers with the same total batch) continues with
  every rank's perturbation.

Each method reports its cost in forward-pass units per SGD step, as docs/PERFORMANCE.md counts
them (an attack step 2: a forward and a backward; an SGD step 3: a forward, and a backward
through activations and weights): PGD-k 2k + 3, the single-step methods 5, free training 3 per
replay, TRADES-k 2k + 1 (the clean prediction) + 6 (two SGD passes).
"""
import tensorflow as tf
from tensorpack.tfutils.optimizer import ProxyOptimizer

from attacks import NoAttack, to_model_space

tfv1 = tf.compat.v1
FREE_PERTURBATION = "free_perturbation"     # the variable's name (kept out of model-final.npz)


class AdversarialTraining:
    """CE on the attacker's images (``NoAttack``: clean training, Table 3)."""
    name = "pgd"
    replays = 1

    def __init__(self, attacker=None, name=None):
        self.attacker = attacker if attacker is not None else NoAttack()
        if name:
            self.name = name

    def passes_per_step(self):
        iters = getattr(self.attacker, "num_iter", 0) or 0
        return 2 * iters + 3

    def describe(self):
        return "%s: %s" % (self.name, self.attacker.describe())

    def tower(self, arch, pixels, label, build_tower, network):
        """-> (the Tower whose logits the SGD step's loss uses, extra loss term or None)."""
        return build_tower(arch, pixels, label, self.attacker, training=True), None


class Trades(AdversarialTraining):
    """Zhang et al.'s loss with ``beta``; ``attacker``: attacks.trades.TradesAttacker (or
    NoAttack: then the KL term is of the clean image with itself, 0)."""
    name = "trades"

    def __init__(self, attacker, beta):
        super().__init__(attacker)
        if not beta >= 0:
            raise ValueError("TRADES beta must be >= 0, got %r" % (beta,))
        self.beta = float(beta)

    def passes_per_step(self):
        iters = getattr(self.attacker, "num_iter", 0) or 0
        return 2 * iters + 1 + 6 if iters else 6

    def describe(self):
        return "trades(beta=%g): %s" % (self.beta, self.attacker.describe())

    def tower(self, arch, pixels, label, build_tower, network):
        from attacks.trades import kl_divergence
        tower = build_tower(arch, pixels, label, self.attacker, training=True)
        clean_logits = tf.cast(network(arch, training=True)(tower.clean), tf.float32)
        kl = tf.reduce_mean(kl_divergence(clean_logits, tower.logits), name="trades_kl")
        # the cross-entropy is on the clean image: swap the tower's logits for the clean ones
        tower.logits = clean_logits
        return tower, self.beta * kl


class FreeTraining(AdversarialTraining):
    """Free adversarial training (see the module's docstring)."""
    name = "free"

    def __init__(self, threat, replays, total_batch, rank=0, batch_per_worker=None):
        super().__init__(NoAttack(targeted=False))
        if replays < 1:
            raise ValueError("free training's replays must be >= 1, got %r" % (replays,))
        self.threat, self.replays = threat, int(replays)
        self.total_batch, self.rank = int(total_batch), int(rank)
        self.batch = int(batch_per_worker or total_batch)
        self.delta = self.adv_input = None

    def passes_per_step(self):
        return 3

    def describe(self):
        return "free(m=%d, eps=%g%s)" % (self.replays, self.threat.epsilon, self.threat.describe())

    def tower(self, arch, pixels, label, build_tower, network):
        from attacks import per_image_metrics
        from model.graph import Tower
        s, c = arch.image_size, arch.image_channels
        self.delta = tfv1.get_variable(FREE_PERTURBATION, [self.total_batch, s, s, c], tf.float32,
                                       initializer=tf.zeros_initializer(), trainable=False)
        rows = self.delta[self.rank * self.batch:(self.rank + 1) * self.batch]
        clean = to_model_space(pixels)
        n = tf.shape(clean)[0]
        # a last, smaller batch (none in training: batches are full) uses the first rows
        adv = self.threat.project(clean + rows[:n], clean)
        self.clean, self.adv_input = clean, adv
        logits = tf.identity(tf.cast(network(arch, training=True)(adv), tf.float32), name="logits")
        metrics = per_image_metrics(logits, label, label, False)
        return Tower(clean, adv, label, logits, metrics), None

    def delta_update(self, input_gradient):
        """delta <- P(delta + epsilon * direction(grad_x)) on this rank's rows."""
        n = tf.shape(input_gradient)[0]
        step = self.threat.direction(input_gradient) * self.threat.eps
        # the ball intersected with the image range, as every attack projects: P(x + delta) - x
        new = self.threat.project(self.adv_input + step, self.clean) - self.clean
        return tfv1.scatter_nd_update(self.delta, tf.range(n)[:, None] + self.rank * self.batch, new)


class FreeOptimizer(ProxyOptimizer):
    """The optimizer of free training: one backward pass gives the weights' gradient and the
    input's (``compute_gradients`` differentiates w.r.t. both at once); ``apply_gradients``
    applies the weights' (allreduced by Horovod, as always) and updates this rank's
    perturbation with the input's, which no other rank sees."""

    def __init__(self, opt, method):
        super().__init__(opt)
        self.method = method
        self._input_gradient = None

    def compute_gradients(self, loss, var_list=None, **kwargs):
        var_list = list(var_list) if var_list is not None else tfv1.trainable_variables()
        grads = tfv1.gradients(loss, var_list + [self.method.adv_input],
                               colocate_gradients_with_ops=kwargs.get("colocate_gradients_with_ops", False),
                               aggregation_method=kwargs.get("aggregation_method"))
        self._input_gradient = tf.stop_gradient(grads[-1])
        return list(zip(grads[:-1], var_list))

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        update = self._opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)
        with tf.control_dependencies([update]):
            delta = self.method.delta_update(self._input_gradient)
        return tf.group(update, delta, name="free_step")

"""The paper's model as graphs: the network on model-space images, and the one function that
builds "network + attacker" for every caller (the training tower, evaluation, export, the
feature figures, the benchmarks).

The model owns its preprocessing: it takes uint8 BGR pixels 0..255, as decoded (the
original's input convention), and scales them to [-1, 1] itself (``to_model_space``).
"""
from dataclasses import dataclass
from typing import Dict, Optional

import tensorflow as tf
from tensorpack.models import BatchNorm
from tensorpack.tfutils.argscope import argscope

from attacks import NoAttack, per_image_metrics, to_model_space
from nets import FAST, backbone_logits

tfv1 = tf.compat.v1


def network(arch, training=False, gradients=FAST, endpoints=None):
    """``images (model space) -> logits`` of ``arch`` (a nets.ArchSpec), creating the
    variables on the first call and reusing them after. ``training=False`` freezes BN (moving
    statistics, no updates), as the attack requires; ``gradients``: nets/gradients.py;
    ``endpoints``: a dict that receives the feature maps of Sec. 3 (nets/resnet.py)."""
    def logits(images):
        with tfv1.variable_scope(tfv1.get_variable_scope(), reuse=tfv1.AUTO_REUSE), \
                argscope(BatchNorm, training=training):
            return backbone_logits(images, arch, endpoints, gradients)
    return logits


@dataclass
class Tower:
    """What ``build_tower`` returns, all [B]-batched: the clean and adversarial images (model
    space), the attack's targets (the labels for untargeted attacks), the logits on the
    adversarial images and the per-image metrics (attacks/metrics.py)."""
    clean: tf.Tensor
    adv: tf.Tensor
    target: tf.Tensor
    logits: tf.Tensor
    metrics: Dict[str, tf.Tensor]


def build_tower(arch, pixels, label, attacker=None, training=False, gradients=FAST, endpoints=None):
    """Sec. 5 and 6: ``attacker``'s adversarial versions of ``pixels`` (uint8 or float 0..255,
    [B, S, S, C]) against the network with frozen BN, then the network (BN in training mode if
    ``training``) on them. ``attacker=None``: the clean images. Tensors are named
    ``adv_image`` and ``logits`` in the current name scope (tensorpack's tower)."""
    clean = to_model_space(pixels)
    frozen = network(arch, training=False, gradients=gradients)
    # Variables are created here, outside the attack's while-loop (tensorpack layers cannot
    # create variables inside one). Nothing consumes this output, so TensorFlow prunes it and
    # it costs nothing per step.
    frozen(clean)
    attacker = attacker if attacker is not None else NoAttack()
    adv, target = attacker.attack(clean, label, frozen, arch.num_classes)
    adv = tf.identity(adv, name="adv_image")
    logits = network(arch, training=training, gradients=gradients, endpoints=endpoints)(adv)
    logits = tf.identity(tf.cast(logits, tf.float32), name="logits")
    metrics = per_image_metrics(logits, label, target, attacker.targeted)
    return Tower(clean, adv, target, logits, metrics)


def build_logits(arch, pixels, gradients=FAST, endpoints: Optional[dict] = None):
    """The network's logits (frozen BN, no attack) for ``pixels`` 0..255: prediction,
    export and the feature figures."""
    return network(arch, training=False, gradients=gradients, endpoints=endpoints)(to_model_space(pixels))

"""The paper's model: preprocessing, the network and its attackers as graphs (``graph``: the
one builder every caller uses), the tensorpack ModelDesc of adversarial training (``desc``),
and its weights on disk (``checkpoint``)."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
from .desc import AdvModel  # noqa: F401
from .graph import Tower, build_logits, build_tower, network  # noqa: F401

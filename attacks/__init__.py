"""White-box attackers of Sec. 5 and 6, built in the graph inside the tower."""
import fdenoise.compat  # noqa: F401  (TF2 workarounds, once)

from .attackers import (ATTACKERS, FGSMAttacker, IFGSMAttacker, MIFGSMAttacker, NoAttack,  # noqa: F401
                        PGDAttacker, RestartAttacker, make_attacker)
from .base import (PIXEL_SCALE, AttackError, Attacker, sample_targets, to_model_space,  # noqa: F401
                   to_pixels)
from .metrics import METRICS, per_image_metrics  # noqa: F401

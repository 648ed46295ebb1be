"""White-box attackers of Sec. 5 and 6 and AutoAttack's members, built in the graph: threat
models (``threat``), their random numbers (``draws``), objectives (``losses``), the iterative
gradient attacks of the paper (``iterative``), restarts, APGD (``apgd``), FAB-T (``fab``),
Square (``square``), per-image metrics and low-precision iterations."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)

from .base import Attacker, NoAttack  # noqa: F401
from .draws import Draws, image_keys  # noqa: F401
from .apgd import APGDAttacker  # noqa: F401
from .fab import FABAttacker  # noqa: F401
from .factory import (AA_VERSIONS, ALL_ATTACKS, ATTACKERS, AUTOATTACK, MEMBERS, STANDARD_ITERATIONS,  # noqa: F401
                      STANDARD_QUERIES, UNTARGETED_ONLY, VERSIONS, autoattack_members, make_attacker, make_member)
from .iterative import FGSMAttacker, IFGSMAttacker, MIFGSMAttacker, PGDAttacker  # noqa: F401
from .metrics import METRICS, RATES, per_image_metrics  # noqa: F401
from .precision import FP32, Precision  # noqa: F401
from .restarts import RestartAttacker  # noqa: F401
from .square import SquareAttacker  # noqa: F401
from .threat import (IMAGE_MAX, IMAGE_MIN, PIXEL_SCALE, THREATS, AttackError, L2Ball, LinfBall,  # noqa: F401
                     ThreatModel, make_threat, to_model_space, to_pixels)

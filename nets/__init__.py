"""Network architectures: ResNet/ResNeXt backbones with the denoising blocks of Sec. 4."""
import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)

from .denoise_ops import BLOCK_OPS, DENOISE_OPS  # noqa: F401
from .gradients import FAST, TENSORFLOW_ONLY, Gradients  # noqa: F401
from .resnet import backbone_logits  # noqa: F401
from .spec import ArchSpec, DenoiseSpec, SpecError, parse_arch  # noqa: F401

"""Network architectures: ResNet/ResNeXt backbones with the denoising blocks of Sec. 4."""
import fdenoise.compat  # noqa: F401  (TF2 workarounds, once)

from .denoise_ops import BLOCK_OPS, DENOISE_OPS  # noqa: F401
from .resnet import backbone_logits  # noqa: F401
from .spec import ArchSpec, DenoiseSpec, SpecError, parse_arch  # noqa: F401

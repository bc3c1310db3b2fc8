"""Training: the paper's recipe, resumable, DDP under torchrun, and training from label maps
alone (SynthSeg-style synthesis).

* :mod:`.config`: :class:`TrainConfig` (one source of defaults) and its checks;
* :mod:`.data`: cases -> MONAI datasets; :mod:`.augment`: spatial and lateral-flip augmentation;
* :mod:`.synthesis`: images rendered from label maps; :mod:`.losses`: the masked Dice + CE loss;
* :mod:`.distributed`: torchrun process groups; :mod:`.trainer`: the loop and :func:`train`.

Imports evaluation (validation metrics), inference (its preprocessing), models, io and labels.
"""

from SwinBOBLib.training.config import (  # noqa: F401
    RESUMABLE_OVERRIDES,
    TrainConfig,
    check_config,
    crops_and_volumes,
    load_config_file,
    resolve_config,
)
from SwinBOBLib.training.trainer import (  # noqa: F401
    Trainer,
    TrainState,
    copy_pretrained,
    load_pretrained,
    model_metadata,
    train,
)

__all__ = [
    "RESUMABLE_OVERRIDES",
    "TrainConfig",
    "check_config",
    "crops_and_volumes",
    "load_config_file",
    "resolve_config",
    "model_metadata",
    "TrainState",
    "Trainer",
    "load_pretrained",
    "copy_pretrained",
    "train",
]

"""Networks and checkpoints: building Swin-UNETR / UNETR / SegResNet / UNet, reading every
checkpoint family safely (``weights_only``), the output heads and their entropy.

* :mod:`.networks`: the network registry and :func:`build_model`; :mod:`.legacy`: MONAI's patch
  merging variants; :mod:`.norms`: normalisation layers (the parameters ETTA adapts);
* :mod:`.heads`: softmax and sigmoid-region heads, activation and per-voxel entropy;
* :mod:`.metadata`: :class:`CheckpointMetadata`; :mod:`.formats` and :mod:`.bundles`: what each
  checkpoint family and MONAI bundle tells; :mod:`.loading`: :func:`load_checkpoint`,
  :func:`save_checkpoint`.

Imports only :mod:`SwinBOBLib.labels` below it.
"""

from SwinBOBLib.models.loading import (  # noqa: F401
    check_state_dict,
    convert_head,
    extract_state_dict,
    load_checkpoint,
    load_checkpoint_and_file,
    read_checkpoint,
    read_checkpoint_file,
    save_checkpoint,
)
from SwinBOBLib.models.metadata import (  # noqa: F401
    CHECKPOINT_FORMAT_VERSION,
    CheckpointMetadata,
)
from SwinBOBLib.models.networks import (  # noqa: F401
    FEATURE_SIZES,
    NETWORKS,
    NetworkSpec,
    build_model,
    count_parameters,
    network_spec,
    roi_multiple,
)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointMetadata",
    "FEATURE_SIZES",
    "NetworkSpec",
    "NETWORKS",
    "roi_multiple",
    "network_spec",
    "build_model",
    "count_parameters",
    "save_checkpoint",
    "read_checkpoint_file",
    "extract_state_dict",
    "check_state_dict",
    "convert_head",
    "load_checkpoint",
    "load_checkpoint_and_file",
    "read_checkpoint",
]

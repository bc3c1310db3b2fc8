"""Normalisation layers: the ones ETTA adapts (LayerNorm, GroupNorm, affine InstanceNorm,
BatchNorm), and InstanceNorm as GroupNorm(C, C), which also accepts one voxel per channel (the
deepest level of a small window).
"""

from __future__ import annotations

import torch
from torch import nn


class InstanceNormAsGroupNorm(torch.nn.GroupNorm):
    """InstanceNorm written as GroupNorm(C, C) that also accepts one voxel per channel.

    With a single voxel the normalised value is 0 (x minus its own mean), so the output is the
    bias (or 0 without affine parameters), where ``F.instance_norm``/``F.group_norm`` raise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0, 0].numel() > 1:
            return super().forward(x)
        out = x - x  # keeps dtype, device and the graph
        if self.affine:
            # The weight takes part (with a zero gradient) so DDP sees every parameter used.
            shape = (1, -1, *([1] * (x.ndim - 2)))
            out = out * self.weight.view(shape).to(out.dtype) + self.bias.view(shape).to(out.dtype)
        return out


def replace_instance_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Swap every InstanceNorm for the identical GroupNorm (one group per channel), in place.

    Why: ``F.instance_norm`` refuses inputs with one voxel per channel, which Swin-UNETR's
    bottleneck sees with 32^3 patches (small models on CPU, tests). GroupNorm(C, C) computes
    the same normalisation, has the same ``weight``/``bias`` names and shapes (or none without
    affine parameters), so state dicts are unchanged and ETTA adapts the same parameters.
    InstanceNorms tracking running statistics are left alone (they are not plain instance norms).
    """
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
            replacement = InstanceNormAsGroupNorm(child.num_features, child.num_features, eps=child.eps,
                                             affine=child.affine)
            if child.affine:
                replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            replace_instance_norms(child)
    return model


#: Normalisation layer types whose affine parameters ETTA adapts.
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm)


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def adaptable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters ETTA updates: affine weights and biases of the normalisation layers.

    LayerNorm, GroupNorm, InstanceNorm (only with ``affine=True``) and BatchNorm; an InstanceNorm
    without affine parameters contributes nothing. Order follows ``model.modules()``.
    """
    params = []
    for module in _norm_modules(model):
        params += [p for p in (getattr(module, "weight", None), getattr(module, "bias", None))
                   if isinstance(p, nn.Parameter)]
    return params

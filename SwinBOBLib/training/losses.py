"""The training loss: Dice + cross-entropy over the channels a case labels (partial labels masked)."""

from __future__ import annotations

import torch


class MaskedDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy (as MONAI's DiceCELoss) over the voxels whose target is not ``ignore``,
    with partial labels: a voxel whose target is ``partial`` is any of the channels its sample's
    ``allowed`` vector marks (the unlabelled body of a label map: none of the structures the map
    contains). There the cross-entropy is the marginal one, ``-log sum_{c allowed} p_c``, and the
    Dice counts the probability it puts on channels not allowed as false positives (the Dice of an
    allowed channel does not look at the voxel: it may or may not be that channel).

    ``forward(logits (B, C, ...), target (B, 1, ...) int, allowed (B, C) or None)``; without
    ``allowed`` (or ``partial``) partial voxels are ignored. The Dice part is MONAI's DiceLoss on
    masked probabilities and masked one-hot targets (MONAI's MaskedDiceLoss masks the label indices
    before their one-hot encoding, so an ignored voxel would count as a background target).
    """

    def __init__(self, ignore: int, partial: int | None = None):
        super().__init__()
        from monai.losses import DiceLoss

        self.ignore, self.partial = int(ignore), None if partial is None else int(partial)
        self.dice = DiceLoss(to_onehot_y=False, softmax=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        from monai.networks.utils import one_hot

        channels, spatial = logits.shape[1], (1,) * (logits.dim() - 2)
        target = target.long()
        partial = target == (self.partial if self.partial is not None else self.ignore)
        labelled = (target != self.ignore) & ~partial
        if allowed is None or self.partial is None:
            partial = torch.zeros_like(partial)  # nothing says what the body may be: ignored
        clean = torch.where(labelled, target, torch.zeros_like(target))
        log_probs = torch.log_softmax(logits, dim=1)
        ce = -log_probs.gather(1, clean)[labelled].sum()
        mask = labelled.to(logits.dtype).expand(-1, channels, *logits.shape[2:])
        if bool(partial.any()):
            allowed = allowed.to(logits.dtype).reshape(-1, channels, *spatial)
            marginal = torch.logsumexp(log_probs + torch.log(allowed.clamp_min(1e-30)), dim=1, keepdim=True)
            ce = ce - marginal[partial].sum()
            mask = torch.maximum(mask, partial.to(logits.dtype) * (1.0 - allowed))
        count = int(labelled.sum()) + int(partial.sum())
        ce = ce / count if count else ce.new_zeros(())
        dice = self.dice(log_probs.exp() * mask, one_hot(clean, channels) * mask)
        return dice + ce

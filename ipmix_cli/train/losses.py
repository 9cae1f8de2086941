"""Training losses: cross-entropy, and the AugMix/IPMix Jensen–Shannon consistency loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def jsd_consistency(logits_clean, logits_aug1, logits_aug2) -> torch.Tensor:
    """Mean over the batch of JS(p_clean, p_aug1, p_aug2), the mixture clamped to [1e-7, 1]."""
    p = [F.softmax(z.float(), dim=1) for z in (logits_clean, logits_aug1, logits_aug2)]
    log_m = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1.0).log()
    # kl_div(log m, p) = Σ p·(log p − log m), averaged over the batch.
    return sum(F.kl_div(log_m, q, reduction="batchmean") for q in p) / 3.0


def jsd_loss(logits: torch.Tensor, labels: torch.Tensor, weight: float = 12.0):
    """Loss for a batch whose logits are [3·B, K] ordered clean, aug1, aug2 (each B rows).

    Returns (loss, clean logits): CE on the clean logits + weight · JS divergence.
    """
    clean, aug1, aug2 = torch.chunk(logits, 3, dim=0)
    ce = F.cross_entropy(clean.float(), labels)
    return ce + weight * jsd_consistency(clean, aug1, aug2), clean

"""The two heads that compare the local feature Z_l with the global prediction Z_g.

- IAD, the *inconsistency* head (GLANCE Sec. 3.2): s_IAD = (1/n) || Z_l - Z_g ||_2^2, a plain
  distance with nothing to learn; its training loss l_IAD is the same quantity.
- DAD, the *distortion* head (GLANCE Sec. 3.3): a trainable comparator C(Z*, Z_g) giving the
  probability that a local feature Z* is consistent with the global prediction Z_g. It is trained
  with binary cross-entropy: positives are (Z_l, Z_g) of normal patches, negatives (Z_s, Z_g) where
  Z_s is the Local-Net feature of the same patch with a random stain pasted in. Its score is
  s_DAD = 1 - C(Z_l, Z_g). It targets subtle distortions that the IAD distance misses.

The paper does not give the comparator's layers. Ours (a choice, listed on the book's page of
deviations) is a small MLP over the symmetric pair features [Z*, Z_g, |Z* - Z_g|, Z* * Z_g],
the usual way to let a classifier see both the features and their agreement.
"""

from __future__ import annotations

import torch
from torch import nn


def iad_score(z_local: torch.Tensor, z_global: torch.Tensor) -> torch.Tensor:
    """s_IAD = (1/n) ||Z_l - Z_g||^2 per sample: ``(B, n), (B, n) -> (B,)``."""
    return (z_local - z_global).pow(2).mean(dim=1)


class DADHead(nn.Module):
    """The comparator C(Z*, Z_g): ``(B, n), (B, n) -> (B,)`` logits of "consistent"."""

    def __init__(self, dim: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4 * dim, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden // 2),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, z_star: torch.Tensor, z_global: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([z_star, z_global, (z_star - z_global).abs(), z_star * z_global], dim=1)
        return self.net(pair).squeeze(1)

    def probability(self, z_star: torch.Tensor, z_global: torch.Tensor) -> torch.Tensor:
        """C(Z*, Z_g) in [0, 1]: ``(B,)``."""
        return torch.sigmoid(self(z_star, z_global))

    def score(self, z_local: torch.Tensor, z_global: torch.Tensor) -> torch.Tensor:
        """s_DAD = 1 - C(Z_l, Z_g): ``(B,)``."""
        return 1.0 - self.probability(z_local, z_global)

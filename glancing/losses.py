"""The training losses of GLANCE, one section per network.

Local-Net pretraining (GLANCE Sec. 3.1, following Uninformed Students, Bergmann et al.,
CVPR 2020, Sec. 3.1):

- :func:`distillation_loss` ``l_k``: regress the normalised teacher descriptor through a linear
  decoder D;
- :func:`compactness_loss` ``l_c``: decorrelate the dimensions of the 128-d descriptor;
- :func:`local_loss` ``l_local = lambda_k l_k + lambda_c l_c``;
- :func:`descriptor_stats` / :class:`RunningDescriptorStats`: the per-dimension mean and std of
  the teacher descriptors over the distillation set, used to normalise the targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "RunningDescriptorStats",
    "compactness_loss",
    "descriptor_stats",
    "distillation_loss",
    "local_loss",
    "normalize_targets",
]

STD_FLOOR = 1e-6  # teacher dimensions with a smaller std are treated as having this std


# ---------------------------------------------------------------------------------------------
# Local-Net pretraining losses (GLANCE Sec. 3.1; Uninformed Students Sec. 3.1)
# ---------------------------------------------------------------------------------------------


def descriptor_stats(targets: Tensor, std_floor: float = STD_FLOOR) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std of teacher descriptors over the distillation set.

    Uninformed Students (Sec. 3.1) normalise each teacher dimension to zero mean and unit
    variance over the training patches before distilling; so do we.

    Args:
        targets: ``(N, D)`` teacher descriptors ``R(p)`` (N >= 1).
        std_floor: lower bound on the returned std (dead teacher dimensions would otherwise
            divide by zero).

    Returns:
        ``mean`` and ``std``, both ``(D,)`` in the dtype of ``targets``; std is the population
        std (divides by N), clamped to at least ``std_floor``.
    """
    if targets.dim() != 2 or targets.shape[0] < 1:
        raise ValueError(f"targets must be (N, D) with N >= 1, got {tuple(targets.shape)}")
    x = targets.detach().double()
    std, mean = torch.std_mean(x, dim=0, correction=0)
    return mean.to(targets.dtype), std.clamp_min(std_floor).to(targets.dtype)


class RunningDescriptorStats:
    """:func:`descriptor_stats` accumulated batch by batch (Chan et al.'s parallel update).

    For distillation sets too large to hold at once: call :meth:`update` with each ``(n, D)``
    batch, then :meth:`compute`. Accumulates in float64 on the batches' device.
    """

    def __init__(self, std_floor: float = STD_FLOOR) -> None:
        self.std_floor = std_floor
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None  # sum of squared deviations from the mean

    def update(self, targets: Tensor) -> None:
        """Add a batch ``(n, D)`` of teacher descriptors."""
        if targets.dim() != 2:
            raise ValueError(f"targets must be (n, D), got {tuple(targets.shape)}")
        n = targets.shape[0]
        if n == 0:
            return
        x = targets.detach().double()
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, batch_mean, batch_m2
            return
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"dimension changed from {self.mean.shape[0]} to {x.shape[1]}")
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def compute(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, both ``(D,)``, as :func:`descriptor_stats` would give on all rows."""
        if self.mean is None or self.m2 is None:
            raise ValueError("no descriptors were added")
        std = (self.m2 / self.count).sqrt().clamp_min(self.std_floor)
        return self.mean.to(dtype), std.to(dtype)


def normalize_targets(target: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(B, D)`` teacher descriptors -> ``(target - mean) / std`` (the regression target)."""
    return (target - mean) / std


def distillation_loss(
    decoded: Tensor, target: Tensor, mean: Tensor, std: Tensor, reduction: str = "mean"
) -> Tensor:
    """Knowledge-distillation loss ``l_k`` (GLANCE Sec. 3.1; Uninformed Students Sec. 3.1).

    ``l_k = || D(L(p)) - (R(p) - mu) / sigma ||_2^2``, averaged over the batch.

    Normalisation choice: with ``reduction="mean"`` (the default) the squared error is also
    averaged over the D teacher dimensions, i.e. it is the per-dimension MSE. Since the target
    has unit variance per dimension, predicting the mean scores about 1 whatever D is (512 for
    ResNet-18, 1280 for EfficientNet-Lite0), which keeps ``lambda_k = 1`` sensible next to the
    compactness loss (also in [0, 1]). ``reduction="sum"`` sums over D as Uninformed Students
    write it (the loss is then D times larger).

    Args:
        decoded: ``(B, D)`` decoder outputs ``D(L(p))``.
        target: ``(B, D)`` raw teacher descriptors ``R(p)`` (no gradient flows into them).
        mean, std: ``(D,)`` from :func:`descriptor_stats` over the distillation set.
        reduction: ``"mean"`` or ``"sum"`` over the D dimensions (always mean over the batch).

    Returns:
        A scalar tensor.
    """
    if decoded.shape != target.shape or decoded.dim() != 2:
        raise ValueError(f"decoded {tuple(decoded.shape)} and target {tuple(target.shape)} "
                         "must both be (B, D)")
    goal = normalize_targets(target.detach(), mean, std)
    squared = (decoded - goal).pow(2)
    if reduction == "mean":
        return squared.mean()
    if reduction == "sum":
        return squared.sum(1).mean()
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def compactness_loss(z: Tensor, eps: float = 1e-8, normalize: bool = True) -> Tensor:
    """Compactness loss ``l_c`` (GLANCE Sec. 3.1; Uninformed Students Sec. 3.1).

    ``l_c = sum_{i != j} c_ij^2`` where ``c`` is the K x K correlation matrix of the descriptors
    over the minibatch. Each dimension is standardised over the batch,
    ``(z_k - mean_k) / sqrt(var_k + eps)`` (population variance), so ``c_ii = var/(var + eps)``
    is 1 up to ``eps`` and the loss does not depend on the scale of z. The entries are squared,
    as in the public ports of Uninformed Students (the paper writes ``c_ij``).

    Normalisation choice: with ``normalize=True`` (the default) the sum is divided by
    ``K (K - 1)``, i.e. it is the *mean* squared off-diagonal correlation, in [0, 1]: 0 for
    decorrelated dimensions, 1 when all are perfectly (anti)correlated. Independent random
    features give about ``1 / B``. ``normalize=False`` returns the plain sum.

    Args:
        z: ``(B, K)`` Local-Net descriptors, B >= 2.
        eps: added to the per-dimension variance.
        normalize: divide by ``K (K - 1)``.

    Returns:
        A scalar tensor.
    """
    if z.dim() != 2 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"z must be (B, K) with B >= 2 and K >= 2, got {tuple(z.shape)}")
    batch, k = z.shape
    centred = z - z.mean(0, keepdim=True)
    standard = centred / (centred.pow(2).mean(0, keepdim=True) + eps).sqrt()
    corr = standard.T @ standard / batch
    off_diagonal = corr.pow(2).sum() - torch.diagonal(corr).pow(2).sum()
    return off_diagonal / (k * (k - 1)) if normalize else off_diagonal


def local_loss(
    decoded: Tensor,
    target: Tensor,
    mean: Tensor,
    std: Tensor,
    z: Tensor,
    lambda_k: float = 1.0,
    lambda_c: float = 1.0,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Local-Net pretraining loss ``l_local = lambda_k l_k + lambda_c l_c`` (GLANCE Sec. 3.1).

    Uses the default (normalised) reductions of :func:`distillation_loss` (per-dimension MSE)
    and :func:`compactness_loss` (mean squared off-diagonal correlation), both of order 1 at
    initialisation, so the default weights ``lambda_k = lambda_c = 1`` (Uninformed Students'
    choice) balance them.

    Args:
        decoded: ``(B, D)`` decoder outputs ``D(L(p))``.
        target: ``(B, D)`` raw teacher descriptors.
        mean, std: ``(D,)`` teacher statistics (:func:`descriptor_stats`).
        z: ``(B, K)`` Local-Net descriptors ``L(p)`` (the decoder's input).
        lambda_k, lambda_c: the weights.
        return_terms: also return the two unweighted terms.

    Returns:
        The scalar total, or ``(total, l_k, l_c)`` with ``return_terms``.
    """
    l_k = distillation_loss(decoded, target, mean, std)
    l_c = compactness_loss(z)
    total = lambda_k * l_k + lambda_c * l_c
    return (total, l_k, l_c) if return_terms else total

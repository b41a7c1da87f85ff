"""Encoders: images in, a feature vector out. Registered by name; each exposes ``out_dim``.

``encoder.weights`` starts an encoder from pretrained weights (:func:`load_weights`): torchvision
weights by name or a checkpoint file. That is how the ``transfer`` baseline gets its encoder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

if TYPE_CHECKING:  # imported where used: a small-CNN trial skips torchvision's import (1.2 s measured)
    import torchvision

from sslsweep.config import ConfigError, EncoderConfig
from sslsweep.rules import TORCHVISION_WEIGHTS


class Encoder(nn.Module):
    """Wraps a backbone: fixed input normalisation, then the backbone, then flattened features.

    Args:
        backbone: maps (N, C, H, W) float images to (N, out_dim) or (N, out_dim, 1, 1).
        out_dim: feature dimension the evaluators and heads expect.
    Inputs are float images in [0, 1]; they are mapped to roughly zero mean, unit scale.
    """

    def __init__(self, backbone: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.backbone((x - 0.5) / 0.25), 1)  # (N, out_dim)


SMALL_IMAGE = 64  # largest image side (px) that gets the CIFAR stem; larger images get ImageNet's


def small_cnn(in_channels: int, width: int, image_size: int | None = None) -> Encoder:
    """A 4-layer CNN sized for CPU: conv3x3-BN-ReLU with widths w, 2w, 4w, 4w, max-pool after the
    2nd and 3rd layers, global average pool. Works from 4x4 inputs up, whatever ``image_size``."""
    w = (width, 2 * width, 4 * width, 4 * width)
    layers: list[nn.Module] = []
    prev = in_channels
    for i, ch in enumerate(w):
        layers += [nn.Conv2d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        if i in (1, 2):
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        prev = ch
    layers += [nn.AdaptiveAvgPool2d(1)]
    return Encoder(nn.Sequential(*layers), out_dim=w[-1])


def resnet18(in_channels: int, width: int, image_size: int | None = None) -> Encoder:
    """torchvision's ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR
    2016): basic blocks, stages of 2, 2, 2, 2; ``width`` w is the stem width, stages w, 2w, 4w, 8w,
    features 8w (64 = the standard network, 512-d features). Stem by :func:`_set_stem`: the CIFAR
    stem for images up to :data:`SMALL_IMAGE` px or of unknown size, ImageNet's above."""
    import torchvision

    return _resnet_encoder(_torchvision_resnet(torchvision.models.resnet18, width), in_channels, image_size)


def resnet50(in_channels: int, width: int, image_size: int | None = None) -> Encoder:
    """torchvision's ResNet-50 (He et al., "Deep Residual Learning for Image Recognition", CVPR
    2016): bottleneck blocks (expansion 4), stages of 3, 4, 6, 3. ``width`` w means what it means
    for :func:`resnet18`, the stem width: stage widths w, 2w, 4w, 8w, features 4 x 8w = 32w (64 =
    the standard network, 2048-d features; 8 gives 256-d features for CPU tests). Stem as for
    :func:`resnet18`: CIFAR's up to :data:`SMALL_IMAGE` px, ImageNet's (7x7 stride 2 + max-pool,
    4x down) above, the 96-224 px the network is made for.

    Example:
        >>> resnet50(3, 8, image_size=96)(torch.rand(2, 3, 96, 96)).shape
        torch.Size([2, 256])
    """
    import torchvision

    return _resnet_encoder(_torchvision_resnet(torchvision.models.resnet50, width), in_channels, image_size)


def _torchvision_resnet(make: Callable[..., torchvision.models.ResNet], width: int) -> torchvision.models.ResNet:
    """torchvision's network (its own initialisation) at width 64; at another width, rebuilt by
    :func:`_scale_resnet` from a throwaway made on the meta device (no memory, no random draws:
    0.5 s saved per ResNet-50)."""
    if width == 64:
        return make(weights=None)
    with torch.device("meta"):
        net = make(weights=None)
    _scale_resnet(net, width)
    return net


def _scale_resnet(net: torchvision.models.ResNet, width: int) -> None:
    """Rebuild a ResNet in place with stem width ``width`` (stages w, 2w, 4w, 8w), the block type
    and stage depths kept; the rebuilt modules have PyTorch's default initialisation."""
    block = type(net.layer1[0])
    depths = [len(stage) for stage in (net.layer1, net.layer2, net.layer3, net.layer4)]
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, depths[0])
    net.layer2 = net._make_layer(block, 2 * width, depths[1], stride=2)
    net.layer3 = net._make_layer(block, 4 * width, depths[2], stride=2)
    net.layer4 = net._make_layer(block, 8 * width, depths[3], stride=2)
    net.fc = nn.Linear(8 * width * block.expansion, 1000)


def _set_stem(net: torchvision.models.ResNet, in_channels: int, image_size: int | None) -> None:
    """Fit the ResNet's stem to the images. Up to :data:`SMALL_IMAGE` px (or size unknown): the
    CIFAR stem of the SimCLR paper (appendix B.9), conv1 3x3 stride 1 and no max-pool, so 32x32
    inputs keep their resolution. Above: ImageNet's, conv1 7x7 stride 2 then a 3x3 stride-2
    max-pool (a 224 px image reaches layer1 at 56x56, as in He et al. 2016), conv1 rebuilt only
    when the images are not RGB."""
    out = net.conv1.out_channels
    if image_size is None or image_size <= SMALL_IMAGE:
        net.conv1 = nn.Conv2d(in_channels, out, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != net.conv1.in_channels:
        net.conv1 = nn.Conv2d(in_channels, out, 7, 2, 3, bias=False)


def _resnet_encoder(net: torchvision.models.ResNet, in_channels: int, image_size: int | None) -> Encoder:
    _set_stem(net, in_channels, image_size)
    out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return Encoder(net, out_dim=out_dim)


ENCODERS: dict[str, Callable[[int, int, int | None], Encoder]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def build_encoder(cfg: EncoderConfig, in_channels: int, image_size: int | None = None) -> Encoder:
    """Build the encoder named in ``cfg`` for images with ``in_channels`` channels and side
    ``image_size`` px (None: unknown, treated as small: the ResNets get the CIFAR stem), starting
    from ``cfg.weights`` when given (see :func:`load_weights`)."""
    if cfg.name not in ENCODERS:
        raise ValueError(f"encoder.name = {cfg.name!r}: unknown encoder; known: {', '.join(ENCODERS)}")
    encoder = ENCODERS[cfg.name](in_channels, cfg.width, image_size)
    if cfg.weights:
        load_weights(encoder, cfg)
    return encoder


# ----------------------------------------------------------------------------- pretrained weights

_TORCHVISION_NAME = re.compile(r"^[A-Za-z0-9]+_Weights\.[A-Z0-9_]+$")
_HOW = "give encoder.weights=/path/to/file.pt (an encoder state dict or an sslsweep state.pt)"


def load_weights(encoder: Encoder, cfg: EncoderConfig) -> None:
    """Load ``cfg.weights`` into ``encoder`` in place; every failure is one :class:`ConfigError` line.

    ``cfg.weights`` is either

    * torchvision weights by name, e.g. ``ResNet18_Weights.IMAGENET1K_V1`` (needs
      ``encoder=resnet18``, ``encoder.width=64``) or ``ResNet50_Weights.IMAGENET1K_V2``
      (``encoder=resnet50``; :data:`~sslsweep.rules.TORCHVISION_WEIGHTS`), read from the torch hub cache
      (``$TORCH_HOME/hub/checkpoints/<file>``) or downloaded there; offline and not cached it
      fails naming the file to put there. ImageNet's conv1 (7x7, stride 2, RGB) fits the ImageNet
      stem (images over 64 px) as it is; for the CIFAR stem (3x3, stride 1) it is resized to 3x3
      (area resampling, which keeps the kernel's sum, i.e. its response to flat input); for grey
      images it is summed over the colour channels; ``fc`` is dropped. The encoder's fixed input normalisation ((x - 0.5) / 0.25) is close to ImageNet's
      (mean ~0.45, std ~0.23);
    * a file: ``torch.load(..., weights_only=True)`` of an encoder state dict (keys
      ``backbone.*``), a plain torchvision ResNet state dict (keys ``conv1.weight``...), or an
      sslsweep trial checkpoint ``{"task": {...}}`` whose ``encoder.*`` entries are taken. A first
      convolution that differs only in colour channels (1 vs 3) or kernel size is adapted as above.
    """
    spec = str(cfg.weights)
    if _TORCHVISION_NAME.match(spec) and not Path(spec).exists():
        state = _torchvision_state(spec, cfg)
    else:
        state = _file_state(spec)
    _load_adapted(encoder, _encoder_entries(state), spec, cfg)


def _torchvision_state(spec: str, cfg: EncoderConfig) -> Mapping[str, Any]:
    enum = spec.split(".")[0]
    if enum not in TORCHVISION_WEIGHTS:
        raise ConfigError("encoder.weights", spec, f"only {', '.join(f'{k}.*' for k in TORCHVISION_WEIGHTS)} fit an "
                                                   f"sslsweep encoder; or {_HOW}")
    fits = TORCHVISION_WEIGHTS[enum]
    if cfg.name != fits or cfg.width != 64:
        raise ConfigError("encoder.weights", spec, f"torchvision {enum} need encoder={fits} with "
                                                   f"encoder.width=64 (got {cfg.name}, width {cfg.width})")
    import torchvision

    try:
        weights = torchvision.models.get_weight(spec)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError("encoder.weights", spec, f"unknown torchvision weights; e.g. {enum}.IMAGENET1K_V1"
                                                   f", or {_HOW}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.exists():
        return _file_state(str(cached))
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False, weights_only=True)
    except Exception as exc:  # offline: URLError, socket errors, ...
        raise ConfigError("encoder.weights", spec, f"not in the torch hub cache and not downloadable "
                                                   f"({type(exc).__name__}); put {weights.url} at {cached} "
                                                   f"(or point TORCH_HOME at a cache holding it), or {_HOW}") from None


def _file_state(path: str) -> Mapping[str, Any]:
    if not Path(path).is_file():
        raise ConfigError("encoder.weights", path, "no such file; give torchvision weights by name (e.g. "
                                                   f"ResNet18_Weights.IMAGENET1K_V1) or {_HOW}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError("encoder.weights", path, f"cannot be loaded with weights_only=True "
                                                   f"({type(exc).__name__}); {_HOW}") from None
    if not isinstance(state, Mapping):
        raise ConfigError("encoder.weights", path, f"holds a {type(state).__name__}, not a state dict; {_HOW}")
    return state


def _encoder_entries(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder's entries of an sslsweep checkpoint, encoder state dict or torchvision state dict."""
    if isinstance(state.get("task"), Mapping):  # an sslsweep trial checkpoint: Pretrainer.state_dict()
        state = {k[len("encoder."):]: v for k, v in state["task"].items() if k.startswith("encoder.")}
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and not any(k.startswith("backbone.") for k in tensors):  # a bare backbone (torchvision)
        tensors = {f"backbone.{k}": v for k, v in tensors.items()}
    return tensors


def _area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of area resampling: entry (i, j) is the overlap of input pixel
    [j, j + 1) with output bin i of width n_in / n_out; every column sums to 1, so sums are kept."""
    edges = torch.linspace(0, n_in, n_out + 1)
    j = torch.arange(n_in)
    return (torch.minimum(edges[1:, None], j + 1.0) - torch.maximum(edges[:-1, None], j * 1.0)).clamp(min=0)


def _adapt_conv(w: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A conv kernel (O, Ci, k, k) made to fit (O, Ct, k', k') when only the kernel size and/or the
    colour channels (1 <-> 3) differ; otherwise returned unchanged (and reported as a mismatch)."""
    if w.ndim != 4 or len(shape) != 4 or w.shape[0] != shape[0]:
        return w
    if w.shape[2:] != shape[2:]:  # resize the kernel, keeping its sum (response to flat input)
        rows, cols = _area_matrix(w.shape[2], shape[2]), _area_matrix(w.shape[3], shape[3])
        w = torch.einsum("ai,ocij,bj->ocab", rows, w.float(), cols)
    if w.shape[1] == 3 and shape[1] == 1:
        w = w.sum(1, keepdim=True)  # grey input = the same value in R, G and B
    elif w.shape[1] == 1 and shape[1] == 3:
        w = w.repeat(1, 3, 1, 1) / 3
    return w


def _load_adapted(encoder: Encoder, state: dict[str, torch.Tensor], spec: str, cfg: EncoderConfig) -> None:
    own = encoder.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith("backbone.fc.")}  # fc is replaced
    for k, v in state.items():
        if k in own and v.shape != own[k].shape:
            state[k] = _adapt_conv(v, own[k].shape)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected or not state:
        what = "; ".join(x for x in (f"shapes differ: {', '.join(wrong[:2])}" if wrong else "",
                                     f"missing: {', '.join(missing[:3])}" if missing else "",
                                     f"unexpected: {', '.join(unexpected[:3])}" if unexpected else "",
                                     "no encoder weights in it" if not state else "") if x)
        raise ConfigError("encoder.weights", spec, f"does not fit encoder {cfg.name} (width {cfg.width}): {what}")
    encoder.load_state_dict(state, strict=False)  # strict but for num_batches_tracked of old files

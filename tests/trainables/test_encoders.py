"""The ResNet encoders: torchvision's architectures, the stem chosen by image size, widths, registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_module
from torch import nn

from sslsweep import validate
from sslsweep.config import ConfigError, EncoderConfig, from_dictconfig
from sslsweep.trainables import encoders
from sslsweep.trainables.encoders import SMALL_IMAGE, build_encoder, resnet18, resnet50


def _layer1_input_side(encoder: encoders.Encoder, channels: int, size: int) -> int:
    """Side of the feature map the stem hands to layer1 for a (1, channels, size, size) image."""
    seen: list[int] = []
    hook = encoder.backbone.layer1.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    with torch.no_grad():
        encoder.eval()(torch.rand(1, channels, size, size))
    hook.remove()
    return seen[0]


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet50_at_width_64_is_torchvisions_resnet50_without_fc() -> None:
    """ImageNet stem (images over 64 px): torchvision's network as it is, fc replaced, 2048-d."""
    enc = resnet50(3, 64, 224)
    reference = torchvision.models.resnet50(weights=None)
    assert enc.out_dim == 2048 and isinstance(enc.backbone.fc, nn.Identity)
    assert _params(enc) == _params(reference) - _params(reference.fc)
    assert _layer1_input_side(enc, 3, 224) == 56  # 7x7 stride 2, then max-pool: He et al. 2016, table 1


@pytest.mark.parametrize("make, per_width", [(resnet18, 8), (resnet50, 32)])
@pytest.mark.parametrize("size, side", [(None, 8), (8, 8), (32, 32), (SMALL_IMAGE, SMALL_IMAGE),
                                        (SMALL_IMAGE + 1, 17), (96, 24)])
def test_the_stem_follows_the_image_size(make, per_width: int, size: int | None, side: int) -> None:
    """Up to SMALL_IMAGE px (or size unknown) the CIFAR stem keeps the resolution; above it,
    ImageNet's divides it by 4. Grey images get a 1-channel conv1 either way; features 8w / 32w."""
    enc = make(1, 4, size)
    assert enc.backbone.conv1.in_channels == 1 and enc.out_dim == 4 * per_width
    pixels = size or 8
    assert _layer1_input_side(enc, 1, pixels) == side
    assert enc(torch.rand(2, 1, pixels, pixels)).shape == (2, enc.out_dim)


def test_resnet18_up_to_64_px_is_torchvisions_with_the_cifar_stem() -> None:
    """The same seed gives the weights of torchvision's ResNet-18 with conv1 made 3x3 stride 1 and
    the max-pool removed: small images get today's network, draw for draw."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    reference.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig("resnet18", 64), 3, SMALL_IMAGE)
    ours = enc.backbone.state_dict()
    assert isinstance(enc.backbone.maxpool, nn.Identity)
    assert all(torch.equal(v, ours[k]) for k, v in reference.state_dict().items() if not k.startswith("fc."))


@pytest.mark.parametrize("width", [1, 3])
def test_resnet50_takes_any_width_and_the_smallest_images(width: int) -> None:
    enc = resnet50(3, width, 4)
    assert not any(t.is_meta for t in enc.state_dict().values())  # nothing left of the meta-device throwaway
    assert enc(torch.rand(2, 3, 4, 4)).shape == (2, 32 * width)


def test_imagenet_weights_fit_the_imagenet_stem_unchanged(tmp_path: Path) -> None:
    """A torchvision ResNet-18 state dict loads into the 224 px encoder with its 7x7 conv1 as it is
    (the CIFAR stem would get it area-resampled to 3x3)."""
    source = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(source, tmp_path / "r18.pt")
    enc = build_encoder(EncoderConfig("resnet18", 64, weights=str(tmp_path / "r18.pt")), 3, 224)
    assert torch.equal(enc.backbone.conv1.weight, source["conv1.weight"])


def test_every_encoder_is_registered_validated_and_configured() -> None:
    """The torch-free name list validation checks equals the registry, and every registered
    encoder has a conf/encoder/<name>.yaml that composes and validates."""
    assert validate.ENCODERS == tuple(encoders.ENCODERS)
    conf = Path(encoders.__file__).parents[1] / "conf" / "encoder"
    assert {p.stem for p in conf.glob("*.yaml")} == set(encoders.ENCODERS)
    for name in encoders.ENCODERS:
        with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
            cfg = from_dictconfig(compose(config_name="config", overrides=[f"encoder={name}"]))
        assert cfg.encoder.name == name


def test_a_torchvision_resnet50_state_dict_file_loads_into_resnet50(tmp_path: Path) -> None:
    """ResNet-50 transfer goes through a file (torchvision weights by name are ResNet-18's only):
    every tensor but fc loads as it is into the ImageNet stem at width 64."""
    source = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(source, tmp_path / "r50.pt")
    enc = build_encoder(EncoderConfig("resnet50", 64, weights=str(tmp_path / "r50.pt")), 3, 224)
    own = enc.backbone.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in source.items() if not k.startswith("fc."))


@pytest.mark.parametrize("overrides, rule", [
    (["encoder=resnet50", "encoder.weights=ResNet34_Weights.IMAGENET1K_V1"],
     r"only torchvision ResNet18_Weights.\*, ResNet50_Weights.\* load by name; .*encoder.weights=/path/to/file.pt$"),
    (["encoder=resnet18", "encoder.weights=ResNet50_Weights.IMAGENET1K_V2"],
     r"torchvision ResNet50_Weights need encoder=resnet50 with encoder.width=64$"),
    (["encoder=resnet50", "encoder.width=8", "encoder.weights=ResNet50_Weights.IMAGENET1K_V2"],
     r"torchvision ResNet50_Weights need encoder=resnet50 with encoder.width=64$"),
])
def test_torchvision_weights_by_name_that_do_not_fit_are_refused_before_ray_starts(overrides: list, rule: str) -> None:
    """By name only ResNet18_Weights.* and ResNet50_Weights.* load, each into its own network at
    width 64: anything else is one line naming the key and the rule, at validation."""
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=[transfer]", *overrides])
    with pytest.raises(ConfigError, match=rf"^encoder.weights = '{overrides[-1].split('=')[1]}': {rule}"):
        from_dictconfig(cfg)


def test_torchvision_resnet50_weights_by_name_load_from_the_hub_cache(tmp_path: Path, monkeypatch) -> None:
    """``encoder=resnet50 encoder.weights=ResNet50_Weights.IMAGENET1K_V2`` reads torchvision's file
    from the torch hub cache (no network) into the ImageNet-stem encoder (224 px, RGB) unchanged:
    every tensor but fc is torchvision's; the validation accepts the pair."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet50(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(imagenet, cache / Path(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url).name)
    enc = build_encoder(EncoderConfig("resnet50", 64, weights="ResNet50_Weights.IMAGENET1K_V2"), 3, 224)
    own = enc.backbone.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in imagenet.items() if not k.startswith("fc."))
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=[transfer]", "encoder=resnet50",
                                                       "encoder.weights=ResNet50_Weights.IMAGENET1K_V2"])
    assert from_dictconfig(cfg).encoder.weights == "ResNet50_Weights.IMAGENET1K_V2"


def _no_network(*args, **kwargs):
    raise AssertionError("the weights were cached: nothing may be downloaded")

"""Pretrained weights: the offline ImageNet EfficientNet-Lite0, local files, clear errors."""

import os
from pathlib import Path

import matplotlib
import pytest
import timm
import torch
from timm.data import ImageNetInfo

from touchstone.imaging import decode_photo, to_model_input
from training.config import ConfigError, DataConfig, ModelConfig, load_config
from training.models import create_model
from training.weights import WeightsError, create_backbone, lite0_package_state_dict

GRACE_HOPPER = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def _imagenet_top5(model: torch.nn.Module, preprocessing) -> list[str]:
    photo = decode_photo(GRACE_HOPPER)
    batch = torch.from_numpy(to_model_input(photo, preprocessing))[None]
    with torch.no_grad():
        top = model.eval()(batch).topk(5).indices[0].tolist()
    info = ImageNetInfo()
    return [info.index_to_description(i) for i in top]


def test_lite0_package_weights_classify_a_photo_the_way_imagenet_would() -> None:
    built = create_model(
        ModelConfig(arch="tf_efficientnet_lite0", pretrained="efficientnet_lite0_package"),
        DataConfig(crop_pct=0.875),
        ("logo",),
    )
    # The weights' own preprocessing: EfficientNet-Lite0 wants 0.5/0.5, not ImageNet's mean.
    assert built.preprocessing.mean == (0.5, 0.5, 0.5) and built.preprocessing.std == (0.5,) * 3
    # Every key of the package, renamed, fills timm's network exactly, classifier included.
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(lite0_package_state_dict(), strict=True)
    assert torch.equal(classifier.conv_stem.weight, built.net.backbone.conv_stem.weight)
    top5 = _imagenet_top5(classifier, built.preprocessing)
    assert "military uniform" in top5, top5  # Grace Hopper in her US Navy uniform
    untrained = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert "military uniform" not in _imagenet_top5(untrained, built.preprocessing)


def test_a_local_weights_file_loads_and_a_mismatched_one_is_refused(tmp_path: Path) -> None:
    source = timm.create_model("resnet10t", pretrained=False)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "resnet10t.pth")
    loaded = create_backbone("resnet10t", "file", tmp_path / "resnet10t.pth", 0.0)
    assert torch.equal(loaded.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(WeightsError, match="do not fit"):
        create_backbone("resnet18", "file", tmp_path / "resnet10t.pth", 0.0)
    with pytest.raises(WeightsError, match="no weights file"):
        create_backbone("resnet18", "file", tmp_path / "absent.pth", 0.0)
    (tmp_path / "junk.pth").write_bytes(b"not torch")
    with pytest.raises(WeightsError, match="not a readable weights file"):
        create_backbone("resnet18", "file", tmp_path / "junk.pth", 0.0)
    with pytest.raises(WeightsError, match=r"needs model\.pretrained_file"):
        create_backbone("resnet18", "file", None, 0.0)


def test_other_weight_errors() -> None:
    with pytest.raises(WeightsError, match="fits tf_efficientnet_lite0"):
        create_backbone("resnet18", "efficientnet_lite0_package", None, 0.0)
    with pytest.raises(WeightsError, match="unknown timm architecture"):
        create_backbone("resnet18x", "none", None, 0.0)
    os.environ["HF_HUB_OFFLINE"] = "1"
    with pytest.raises(WeightsError, match="pretrained_file"):
        create_backbone("resnet10t", "hub", None, 0.0)  # offline: says what to do instead


def test_region_heads() -> None:
    built = create_model(
        ModelConfig(arch="test_resnet", img_size=48),
        DataConfig(),
        ("hardware", "stitching", "logo"),
    )
    images = torch.zeros(4, 3, 48, 48)
    assert built.net(images).shape == (4, 3)
    chosen = built.net.region_logits(images, torch.tensor([0, 1, 2, 0]))
    assert torch.allclose(chosen, built.net(images)[torch.arange(4), torch.tensor([0, 1, 2, 0])])


def test_config_typos_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  arch: resnet18\noptim:\n  lr: 0.01\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match=r"optim\.epohcs"):
        load_config(config)
    config.write_text("model:\n  arch: resnet18\noptim:\n  lr: 0.01\n")
    loaded = load_config(config, ["optim.epochs=4", "data.balance=sampler", "model.img_size=96"])
    assert (loaded.optim.epochs, loaded.optim.lr, loaded.data.balance) == (4, 0.01, "sampler")
    with pytest.raises(ConfigError, match=r"data\.balanse"):
        load_config(config, ["data.balanse=none"])
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(config, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="unknown augmentation"):
        load_config(config, ["data.augment=heavy"])
    with pytest.raises(ConfigError, match="add up to 1"):
        load_config(config, ["data.fractions=[0.5, 0.5, 0.5, 0.0]"])
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(config, ["optim.lr"])

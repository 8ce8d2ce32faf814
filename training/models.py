"""The authenticity model: a timm backbone shared by all regions, one head per region.

Regions look nothing alike (an engraving, a seam, a monogram) and their cues differ, so each
region gets its own linear head on the shared features; the backbone learns what all share
(texture, edges, print). The network returns one log-odds of *authentic* per region; the loss
and serving read the column of the photo's region, so the exported graph needs no extra input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import resolve_model_data_config
from torch import nn

from touchstone.imaging import Preprocessing
from training.config import DataConfig, ModelConfig
from training.weights import create_backbone


class AuthenticityNet(nn.Module):
    def __init__(self, backbone: nn.Module, regions: tuple[str, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.regions = tuple(regions)
        self.heads = nn.Linear(backbone.num_features, len(regions))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, regions): log-odds that the photo shows an authentic region."""
        return self.heads(self.backbone(images))

    def region_logits(self, images: torch.Tensor, region_index: torch.Tensor) -> torch.Tensor:
        return self(images).gather(1, region_index[:, None]).squeeze(1)


@dataclass(frozen=True)
class BuiltModel:
    net: AuthenticityNet
    preprocessing: Preprocessing


def create_model(model: ModelConfig, data: DataConfig, regions: tuple[str, ...]) -> BuiltModel:
    """Build the network and the preprocessing its weights expect (timm's pretrained config)."""
    backbone = create_backbone(
        model.arch, model.pretrained, model.pretrained_file, model.drop_rate, model.drop_path_rate
    )
    resolved = resolve_model_data_config(backbone)
    size = model.img_size or int(resolved["input_size"][-1])
    interpolation = resolved.get("interpolation", "bicubic")
    preprocessing = Preprocessing(
        input_size=size,
        mean=tuple(float(m) for m in resolved["mean"]),  # type: ignore[arg-type]
        std=tuple(float(s) for s in resolved["std"]),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bicubic",
        crop_pct=data.crop_pct,
    )
    return BuiltModel(AuthenticityNet(backbone, regions), preprocessing)


def torch_predict(net: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The network as `touchstone.evaluation.scoring` wants: normalised pixels in, log-odds out."""
    net = net.eval()

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(batch)).float().numpy()

    return predict

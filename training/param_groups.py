"""The optimiser's parameter groups and the head-only phase.

Fine-tuning a pretrained backbone with a freshly initialised head: the head needs a high
learning rate to get anywhere in a few epochs, while the same rate on the backbone wrecks the
ImageNet features that a small data set cannot relearn. So the head and the backbone are
separate AdamW groups (`optim.backbone_lr_scale`), and the first `optim.head_epochs` may train
the head alone on frozen features, so that the backbone's first gradients come through a head
that already points somewhere rather than through random weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.models import AuthenticityNet


def head_parameters(net: AuthenticityNet) -> list[nn.Parameter]:
    """The classifier's parameters: the region heads, and timm's own classifier if the backbone
    kept one (`get_classifier()`; an Identity without parameters when built with no classes)."""
    modules: list[nn.Module] = [net.heads]
    classifier = getattr(net.backbone, "get_classifier", None)
    if callable(classifier) and isinstance(classifier(), nn.Module):
        modules.append(classifier())
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for parameter in module.parameters():
            seen.setdefault(id(parameter), parameter)
    return list(seen.values())


def backbone_parameters(net: AuthenticityNet) -> list[nn.Parameter]:
    head = {id(p) for p in head_parameters(net)}
    return [p for p in net.parameters() if id(p) not in head]


def param_groups(
    net: AuthenticityNet, weight_decay: float, backbone_lr_scale: float
) -> list[dict[str, Any]]:
    """Head and backbone groups, each split as timm splits them: biases and norm weights (1-D)
    get no weight decay. `lr_scale` is what timm's schedulers multiply the scheduled rate by,
    so the backbone follows the same schedule at `backbone_lr_scale` of the head's rate."""
    head = {id(p) for p in head_parameters(net)}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in net.named_parameters():
        part = "head" if id(parameter) in head else "backbone"
        decay = parameter.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((part, decay), []).append(parameter)
    return [
        {
            "params": params,
            "name": f"{part}{'' if decay else '_no_decay'}",
            "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": backbone_lr_scale if part == "backbone" else 1.0,
        }
        for (part, decay), params in groups.items()
    ]


def set_trainable(net: AuthenticityNet, head_only: bool) -> None:
    """Train mode for the parts that train. In the head-only phase the backbone is frozen:
    no gradients (so AdamW leaves it and its moments alone, and the backward pass stops at
    the head: about a third of a full step) and eval mode (BatchNorm's running statistics are
    weights too; updating them would change the features the head is fitted to)."""
    for parameter in backbone_parameters(net):
        parameter.requires_grad_(not head_only)
    net.train()
    if head_only:
        net.backbone.eval()
        net.heads.train()


def backbone_frozen(net: AuthenticityNet) -> bool:
    return not any(p.requires_grad for p in backbone_parameters(net))


def lr_by_group(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current rate of each named group (for logs and tests)."""
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}

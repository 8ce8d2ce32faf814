"""The fine-tuning recipe's options: the head-only phase, the two learning rates, the item
log-loss monitor, and a config that names them wrong."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from training.bookkeeping import EarlyStopping
from training.config import ConfigError, load_config
from training.distributed import init_world
from training.loop import Trainer, train
from training.param_groups import backbone_parameters, head_parameters, lr_by_group
from training.steps import train_epoch
from training.validation import item_metrics

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny-test.yaml"


def _trainer(tmp_path: Path, manifest: Path, overrides: list[str]) -> Trainer:
    config = load_config(TINY, ["tracking.enabled=false", *overrides])
    return Trainer(config, manifest, tmp_path / "run", init_world(), Console(quiet=True))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm's running statistics too)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


def test_the_head_only_phase_leaves_the_backbone_alone_and_moves_the_heads(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    trainer = _trainer(tmp_path, tiny_synthetic, ["optim.epochs=2", "optim.head_epochs=1"])
    parts = trainer.parts
    net = parts.networks.net
    assert parts.optimisation.head_steps == parts.loaders.steps_per_epoch == 3
    backbone, heads = _snapshot(net.backbone), _snapshot(net.heads)
    assert any("running_mean" in k for k in backbone)  # the buffers are checked too

    train_epoch(0, trainer.context, parts, trainer.result)
    assert _changed(backbone, net.backbone) == []
    assert set(_changed(heads, net.heads)) == {"weight", "bias"}

    # The second epoch trains everything: the backbone, its running statistics included.
    train_epoch(1, trainer.context, parts, trainer.result)
    changed = _changed(backbone, net.backbone)
    assert any("running_mean" in k for k in changed)
    assert any(k.endswith("conv1.weight") for k in changed)
    assert all(p.requires_grad for p in net.parameters())


def test_without_a_head_only_phase_the_first_epoch_moves_the_backbone(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    trainer = _trainer(tmp_path, tiny_synthetic, ["optim.epochs=2"])
    net = trainer.parts.networks.net
    backbone = _snapshot(net.backbone)
    train_epoch(0, trainer.context, trainer.parts, trainer.result)
    assert any(k.endswith("conv1.weight") for k in _changed(backbone, net.backbone))


def test_head_and_backbone_get_their_own_learning_rates(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    trainer = _trainer(
        tmp_path,
        tiny_synthetic,
        ["optim.lr=0.01", "optim.backbone_lr_scale=0.1", "optim.warmup_epochs=0"],
    )
    net, optimisation = trainer.parts.networks.net, trainer.parts.optimisation
    optimizer = optimisation.optimizer
    assert lr_by_group(optimizer) == pytest.approx(
        {"head": 0.01, "head_no_decay": 0.01, "backbone": 0.001, "backbone_no_decay": 0.001}
    )
    # Every parameter in exactly one group; the heads' in the head groups only.
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())
    head_ids = {id(p) for p in head_parameters(net)}
    assert head_ids == {id(net.heads.weight), id(net.heads.bias)}
    for group in optimizer.param_groups:
        in_head = {id(p) in head_ids for p in group["params"]}
        assert in_head == {group["name"].startswith("head")}
    # Biases and norm weights get no weight decay, as timm's own grouping does.
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay["backbone_no_decay"] == decay["head_no_decay"] == 0.0 and decay["head"] > 0
    # Down the schedule the ratio stays.
    optimisation.scheduler.step_update(num_updates=4)
    rates = lr_by_group(optimizer)
    assert rates["head"] < 0.01 and rates["backbone"] == pytest.approx(rates["head"] * 0.1)
    assert len(backbone_parameters(net)) + len(head_ids) == len(list(net.parameters()))


def test_item_log_loss_is_lower_the_better_and_picks_its_epoch() -> None:
    stopping = EarlyStopping("val_item_log_loss", patience=None)
    assert [stopping.observe(v) for v in (0.6, 0.4, 0.5, 0.45)] == [True, True, False, False]
    assert stopping.best_value == 0.4


def test_item_metrics_group_photos_by_item() -> None:
    regions = ("hardware", "stitching", "logo")
    # Four items of three photos; each photo alone is a weak guess, each item's mean is right.
    labels = np.repeat([1.0, 0.0, 1.0, 0.0], 3)
    logits = np.array([2.0, 2.0, -1.0, -2.0, -2.0, 1.0, 2.0, -1.0, 2.0, 1.0, -2.0, -2.0])
    item_ids = [f"item{i}" for i in np.repeat(range(4), 3)]
    region_index = np.tile([0, 1, 2], 4)
    metrics = item_metrics(logits, labels, region_index, item_ids, regions)
    assert metrics["item_count"] == 4.0 and metrics["item_auc"] == 1.0
    # Each photo its own item: the same scores rank worse.
    alone = item_metrics(logits, labels, region_index, [str(i) for i in range(12)], regions)
    assert alone["item_auc"] < 1.0 and alone["item_log_loss"] > metrics["item_log_loss"]


def test_a_run_monitored_on_item_log_loss_keeps_the_epoch_with_the_lowest(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    config = load_config(
        TINY,
        ["tracking.enabled=false", "optim.epochs=4", "optim.monitor=val_item_log_loss"],
    )
    result = train(config, tiny_synthetic, tmp_path / "run", console=Console(quiet=True))
    losses = [h["val_item_log_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and "val_item_auc" in result.history[0]
    assert len(set(losses)) > 1  # else any rule would pick the first epoch
    assert result.best_epoch == int(np.argmin(losses))
    assert result.best["val_item_log_loss"] == min(losses)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optim.head_epoch=1", "head_epoch"),  # a misspelt key
        ("optim.backbone_lr=0.1", "backbone_lr"),
        ("optim.monitor=val_item_logloss", "monitor"),  # a metric that is not logged
        ("optim.backbone_lr_scale=0", "backbone_lr_scale"),
        ("optim.head_epochs=2", "head_epochs"),  # as long as the run: the backbone never trains
        ("model.drop_path_rate=1.0", "drop_path_rate"),  # every block skipped
    ],
)
def test_a_config_that_names_an_option_wrong_is_refused(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(TINY, [override])


def test_stochastic_depth_skips_blocks_in_training_and_never_in_evaluation() -> None:
    """`model.drop_path_rate` reaches timm: in training a residual block is sometimes skipped
    (two passes over the same batch differ), and evaluation, hence export, is unaffected."""
    from training.models import create_model

    config = load_config(TINY, ["model.drop_path_rate=0.5"])
    net = create_model(config.model, config.data, ("logo",)).net
    with torch.no_grad():  # timm starts residual branches at zero: skipping one would show nothing
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.5)
    plain = load_config(TINY)
    without = create_model(plain.model, plain.data, ("logo",)).net
    without.load_state_dict(net.state_dict())
    images = torch.randn(4, 3, 64, 64)
    torch.manual_seed(0)
    net.eval(), without.eval()
    with torch.no_grad():
        assert torch.equal(net(images), without(images))
        net.train()
        passes = [net(images) for _ in range(4)]
    assert any(not torch.equal(passes[0], other) for other in passes[1:])

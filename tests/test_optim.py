"""Parameter groups (no decay on norms/embeddings, backbone lr), poly schedule, clipping."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mask2anomaly.config import Config
from mask2anomaly.model.mask2anomaly import build_model
from mask2anomaly.train.optim import (
    PolySchedule,
    build_optimizer,
    build_scheduler,
    clip_grad_norm_full_model,
    param_groups,
)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 4)
        self.tied = nn.Linear(4, 4)
        self.tied.weight = self.head.weight  # shared: must appear once
        self.norm = nn.LayerNorm(4)
        self.group_norm = nn.GroupNorm(2, 4)
        self.queries = nn.Embedding(5, 4)
        self.level_embed = nn.Parameter(torch.zeros(3, 4))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def settings(groups: list[dict]) -> dict[int, tuple[float, float]]:
    """id(param) -> (lr, weight_decay), checking each parameter occurs once."""
    found: dict[int, tuple[float, float]] = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in found
            found[id(param)] = (group["lr"], group["weight_decay"])
    return found


def test_toy_groups_follow_the_official_rules() -> None:
    model = Toy()
    found = settings(param_groups(model, lr=1.0, weight_decay=0.05, backbone_lr_multiplier=0.1))
    expected = {
        model.backbone[0].weight: (0.1, 0.05),
        model.backbone[0].bias: (0.1, 0.05),
        model.backbone[1].weight: (0.1, 0.0),
        model.backbone[1].bias: (0.1, 0.0),
        model.head.weight: (1.0, 0.05),
        model.head.bias: (1.0, 0.05),
        model.tied.bias: (1.0, 0.05),
        model.norm.weight: (1.0, 0.0),
        model.norm.bias: (1.0, 0.0),
        model.group_norm.weight: (1.0, 0.0),
        model.group_norm.bias: (1.0, 0.0),
        model.queries.weight: (1.0, 0.0),
        model.level_embed: (1.0, 0.05),  # plain Parameter: decayed, as Mask2Former does
    }
    assert found == {id(p): v for p, v in expected.items()}
    groups = param_groups(model, lr=1.0, no_decay_names=("level_embed",))
    assert settings(groups)[id(model.level_embed)] == (1.0, 0.0)


def test_tiny_model_groups(tiny_config: Config) -> None:
    model = build_model(tiny_config.model)  # tiny config trains the backbone
    found = settings(param_groups(model, lr=1e-4))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert set(found) == {id(p) for p in trainable.values()}
    modules = dict(model.named_modules())
    for name, param in trainable.items():
        lr, decay = found[id(param)]
        assert lr == pytest.approx(1e-5 if name.startswith("backbone.") else 1e-4)
        owner = modules[name.rsplit(".", 1)[0]] if "." in name else model
        if isinstance(owner, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)):
            assert decay == 0.0, name
        else:
            assert decay == 0.05, name
    names = {n for n in trainable if n.endswith(("query_feat.weight", "query_embed.weight"))}
    assert names and all(found[id(trainable[n])][1] == 0.0 for n in names)


def test_frozen_backbone_is_left_out(tiny_config: Config) -> None:
    backbone = dataclasses.replace(tiny_config.model.backbone, freeze=True)
    model = build_model(dataclasses.replace(tiny_config.model, backbone=backbone))
    optimizer = build_optimizer(model, lr=1e-4)
    ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in ids for p in model.backbone.parameters())
    assert all(g["lr"] == 1e-4 for g in optimizer.param_groups)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_no_trainable_parameters_is_an_error() -> None:
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), lr=1e-4)


def test_poly_schedule_values() -> None:
    schedule = PolySchedule(100, 0.9)
    assert schedule(0) == 1.0
    assert schedule(50) == pytest.approx(0.5**0.9)
    assert schedule(90) == pytest.approx(0.1**0.9)
    assert schedule(100) == 0.0 and schedule(150) == 0.0


def test_scheduler_scales_every_group_and_saves_state() -> None:
    optimizer = build_optimizer(Toy(), lr=1e-4)
    scheduler = build_scheduler(optimizer, max_iters=10, power=0.9)
    for step in range(4):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(group["initial_lr"] * (1 - step / 10) ** 0.9)
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0] == {"max_iters": 10, "power": 0.9}
    assert {g["initial_lr"] for g in optimizer.param_groups} == {1e-4, 1e-5}


def test_full_model_clipping() -> None:
    model = Toy()
    optimizer = build_optimizer(model, lr=1e-4)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    norm = clip_grad_norm_full_model(optimizer, 0.01)
    assert norm.item() == pytest.approx(count**0.5, rel=1e-5)
    grads = torch.cat([p.grad.flatten() for g in optimizer.param_groups for p in g["params"]])
    assert grads.norm().item() == pytest.approx(0.01, rel=1e-4)
    assert torch.allclose(grads, grads[0].expand_as(grads))  # direction kept
    assert torch.equal(model.frozen.weight.grad, torch.ones(4, 4))  # not optimised, untouched
    before = grads.norm()
    assert clip_grad_norm_full_model(optimizer, 0.0).item() == pytest.approx(before.item())

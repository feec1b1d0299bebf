"""Checkpoint import / save / load: round trips keep outputs, every bad file has a clear error."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mask2anomaly.checkpoint import (
    import_official,
    load_backbone_weights,
    load_checkpoint_config,
    load_model,
    save_checkpoint,
)
from mask2anomaly.cli import main
from mask2anomaly.errors import UserError
from mask2anomaly.model import build_model
from mask2anomaly.model.backbone import ResNet

# Settings that cannot be read off weights: the tiny config's head and group counts.
TINY_OVERRIDES = [
    "model.pixel_decoder.num_heads=4",
    "model.decoder.num_heads=4",
    "model.pixel_decoder.num_groups=8",
]


def to_official_names(state: dict[str, torch.Tensor], num_queries: int) -> dict[str, torch.Tensor]:
    """Our keys -> the official detectron2 keys (written independently of checkpoint.py)."""
    official = {}
    for key, value in state.items():
        if key.startswith("pixel_decoder.encoder.level_embed"):
            key = "sem_seg_head.pixel_decoder.transformer.level_embed"
        elif key.startswith("pixel_decoder.encoder."):
            key = (
                "sem_seg_head.pixel_decoder.transformer.encoder."
                + key[len("pixel_decoder.encoder.") :]
            )
        elif key.startswith("pixel_decoder.lateral_conv."):
            key = (
                "sem_seg_head.pixel_decoder.adapter_1." + key[len("pixel_decoder.lateral_conv.") :]
            )
        elif key.startswith("pixel_decoder.output_conv."):
            key = "sem_seg_head.pixel_decoder.layer_1." + key[len("pixel_decoder.output_conv.") :]
        elif key.startswith("pixel_decoder."):
            key = "sem_seg_head." + key
        elif key.startswith("decoder."):
            key = "sem_seg_head.predictor." + key[len("decoder.") :]
        official[key] = value
    # keys the official files carry that the forward pass never uses
    layers = {k.split(".")[3] for k in official if ".transformer_cross_attention_layers." in k}
    for layer in layers:
        prefix = f"sem_seg_head.predictor.transformer_cross_attention_layers.{layer}.fusion_layer."
        official[prefix + "weight"] = torch.randn(num_queries, 2 * num_queries, 1, 1)
        official[prefix + "bias"] = torch.randn(num_queries)
    official["criterion.empty_weight"] = torch.ones(4)
    official["backbone.stem.conv1.norm.num_batches_tracked"] = torch.tensor(0)
    return official


@pytest.fixture()
def tiny_official(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config.model).eval()
    state = to_official_names(model.state_dict(), tiny_config.model.decoder.num_queries)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") or "stem" in k}
    path = tmp_path / "official.pth"
    torch.save({"model": state, "trainer": {"iteration": 10}, "iteration": 10}, path)
    return model, state, path


def outputs(model, seed=0):
    torch.manual_seed(seed)
    images = [torch.randint(0, 256, (3, 64, 96)).float()]
    with torch.no_grad():
        out = model(model.preprocess(images))
    return out.class_logits, out.mask_logits


def test_import_save_load_round_trip_keeps_outputs(tiny_official, tmp_path, tiny_config):
    model, _, path = tiny_official
    imported, cfg = import_official(path, overrides=TINY_OVERRIDES)
    assert cfg.model.backbone.depth == 18 and cfg.model.backbone.base_width == 16
    assert cfg.model.decoder.num_queries == 16 and cfg.model.decoder.num_layers == 3
    assert cfg.model.pixel_decoder.num_points == 2 and cfg.model.num_classes == 19
    for a, b in zip(outputs(model), outputs(imported)):
        assert torch.allclose(a, b, atol=1e-5)
    save_checkpoint(tmp_path / "native.pt", imported, cfg)
    loaded = load_model(tmp_path / "native.pt")
    for a, b in zip(outputs(imported), outputs(loaded)):
        assert torch.equal(a, b)
    assert load_checkpoint_config(tmp_path / "native.pt") == cfg
    over = load_checkpoint_config(tmp_path / "native.pt", ["scoring.refinement=none"])
    assert over.scoring.refinement == "none"


def test_import_from_pkl_and_bare_state_dict(tiny_official, tmp_path):
    model, state, _ = tiny_official
    pkl = tmp_path / "official.pkl"
    with pkl.open("wb") as f:
        arrays = {k: v.numpy() for k, v in state.items()}
        pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": True}, f)
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    for path in (pkl, bare):
        imported, _ = import_official(path, overrides=TINY_OVERRIDES)
        for a, b in zip(outputs(model), outputs(imported)):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.pop("sem_seg_head.predictor.class_embed.bias"),
            "1 missing: decoder.class_embed.bias",
        ),
        (
            lambda s: s.update({"sem_seg_head.extra.weight": torch.ones(1)}),
            "1 unexpected: sem_seg_head.extra.weight",
        ),
        (
            lambda s: s.update({"sem_seg_head.predictor.decoder_norm.bias": torch.ones(3)}),
            r"1 mis-shaped: decoder.decoder_norm.bias \(3,\) != \(64,\)",
        ),
        (lambda s: s.pop("sem_seg_head.predictor.query_feat.weight"), "not an official .* no key"),
    ],
)
def test_bad_official_weights_name_the_keys(tiny_official, tmp_path, edit, message):
    _, state, _ = tiny_official
    state = dict(state)
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=message) as error:
        import_official(path, overrides=TINY_OVERRIDES)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unreadable_files_give_one_line_errors(tmp_path, tiny_official):
    _, _, official = tiny_official
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with (tmp_path / "evil.pkl").open("wb") as f:
        pickle.dump({"model": Evil()}, f)
    cases = [
        (tmp_path / "missing.pth", "no such file"),
        (tmp_path / "garbage.pth", "not a readable weights file"),
        (tmp_path / "list.pth", "expected a dict"),
        (tmp_path / "evil.pth", "cannot be read safely|not a readable weights file"),
        (tmp_path / "evil.pkl", "cannot be read safely"),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=message) as error:
            import_official(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="not a mask2anomaly checkpoint"):
        load_model(official)


def test_convert_command(tiny_official, tmp_path, capsys):
    model, _, path = tiny_official
    out = tmp_path / "converted.pt"
    sets = [arg for o in TINY_OVERRIDES for arg in ("--set", o)]
    assert main(["convert", str(path), str(out), *sets]) == 0
    for a, b in zip(outputs(model), outputs(load_model(out))):
        assert torch.allclose(a, b, atol=1e-5)
    assert main(["convert", str(tmp_path / "nope.pth"), str(out)]) == 2
    assert "nope.pth: no such file" in capsys.readouterr().err


def torchvision_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """detectron2-layout ResNet keys -> torchvision keys (the Barlow Twins resnet50.pth)."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "stem":
            new = (
                "conv1.weight" if parts[-1] == "weight" and len(parts) == 3 else "bn1." + parts[-1]
            )
        else:
            layer = f"layer{int(parts[0][3:]) - 1}.{parts[1]}"
            if parts[2] == "shortcut":
                new = (
                    f"{layer}.downsample.0.weight"
                    if len(parts) == 4
                    else f"{layer}.downsample.1.{parts[-1]}"
                )
            else:
                j = parts[2][-1]
                new = f"{layer}.conv{j}.weight" if len(parts) == 4 else f"{layer}.bn{j}.{parts[-1]}"
        renamed[new] = value
    return renamed


@pytest.mark.parametrize("depth", [50, 18])
def test_backbone_import_torchvision_and_detectron2_names(tmp_path, depth):
    torch.manual_seed(0)
    source = ResNet(depth=depth, base_width=16)
    for buffer in source.buffers():
        buffer.copy_(torch.rand_like(buffer) + 0.5)
    for param in source.parameters():  # He-scaled so activations stay finite through 16 blocks
        param.data.normal_(std=0.5 * (2 / param[0].numel()) ** 0.5)
    tv = torchvision_names(source.state_dict())
    tv.update(
        {
            "fc.weight": torch.zeros(10, 8 * 16 * (4 if depth == 50 else 1)),
            "fc.bias": torch.zeros(10),
        }
    )
    torch.save(tv, tmp_path / "tv.pth")
    with (tmp_path / "d2.pkl").open("wb") as f:
        pickle.dump(
            {"model": {f"backbone.{k}": v.numpy() for k, v in source.state_dict().items()}}, f
        )
    image = torch.randn(1, 3, 64, 64)
    for name in ("tv.pth", "d2.pkl"):
        target = ResNet(depth=depth, base_width=16)
        load_backbone_weights(target, tmp_path / name)
        expected = source(image)["res5"]
        assert torch.isfinite(expected).all() and torch.equal(expected, target(image)["res5"])
    del tv["layer1.0.conv1.weight"]
    torch.save(tv, tmp_path / "incomplete.pth")
    with pytest.raises(UserError, match="1 missing: res2.0.conv1.weight"):
        load_backbone_weights(ResNet(depth=depth, base_width=16), tmp_path / "incomplete.pth")


def test_numpy_arrays_in_pkl_keep_values(tmp_path):
    target = ResNet(depth=18, base_width=8)
    state = {
        k: np.full(tuple(v.shape), 0.5, dtype=np.float32) for k, v in target.state_dict().items()
    }
    with (tmp_path / "w.pkl").open("wb") as f:
        pickle.dump({"model": state}, f)
    load_backbone_weights(target, tmp_path / "w.pkl")
    assert all(torch.all(v == 0.5) for v in target.state_dict().values())

"""Config tree: official defaults, strict YAML loading, typed overrides, packaged configs."""

from __future__ import annotations

import pytest

from mask2anomaly.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    packaged_config_names,
    save_config,
)


def test_defaults_are_the_official_values():
    cfg = Config()
    assert cfg.model.num_classes == 19 and cfg.model.decoder.num_queries == 100
    assert cfg.model.decoder.num_layers == 9 and cfg.model.decoder.cross_attention == "global"
    assert cfg.model.pixel_decoder.num_encoder_layers == 6
    assert cfg.model.pixel_decoder.encoder_ffn_dim == 1024 and cfg.model.decoder.ffn_dim == 2048
    assert cfg.loss.num_points == 112 * 112 and cfg.loss.no_object_weight == 0.1
    assert (cfg.loss.class_weight, cfg.loss.mask_weight, cfg.loss.dice_weight) == (2.0, 5.0, 5.0)
    assert cfg.train.lr == 1e-4 and cfg.train.max_iters == 90000 and cfg.train.batch_size == 16
    assert cfg.train.clip_grad_norm == 0.01 and cfg.data.crop_size == (380, 760)
    assert cfg.outlier.margin == 1.0 and cfg.outlier.anomaly_mix_prob == 0.2
    assert cfg.inference.min_size == 1024 and cfg.inference.max_size == 2048
    assert cfg.scoring.refinement == "official" and cfg.scoring.refine_class_threshold == 0.95


def test_packaged_configs_load_and_finetune_lists_only_differences():
    names = packaged_config_names()
    assert {"cityscapes_r50", "finetune_anomalymix", "inference", "tiny"} <= set(names)
    ft = load_config("finetune_anomalymix")
    assert ft.outlier.enabled and ft.train.lr == 1e-5 and ft.train.batch_size == 8
    assert ft.train.max_iters == 5000 and ft.model == Config().model
    assert load_config("cityscapes_r50") == Config()


def test_unknown_key_names_the_nearest_valid_one(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'.*'lr'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"did you mean 'decoder'"):
        load_config(None, ["model.decodr.num_layers=3"])


def test_overrides_are_type_checked():
    cfg = load_config(
        "tiny",
        [
            "train.lr=1e-5",
            "model.decoder.cross_attention=masked",
            "data.crop_size=(64, 128)",
            "inference.flip=False",
        ],
    )
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.model.decoder.cross_attention == "masked"
    assert cfg.data.crop_size == (64, 128) and cfg.inference.flip is False
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0  # int is a valid float
    for word, value in (("false", False), ("TRUE", True), ("True", True), (" false ", False)):
        assert load_config(None, [f"inference.flip={word}"]).inference.flip is value  # YAML
    for bad, message in [
        ("train.max_iters=1.5", "expected an integer"),
        ("inference.flip=1", "expected true/false"),
        ("model.decoder.cross_attention=gma", "not one of"),
        ("data.crop_size=(1, 2, 3)", "expected 2 values"),
        ("train.lr", "section.key=value"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [bad])


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("tiny", ["train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="no such file or packaged config"):
        load_config(tmp_path / "nope.yaml")

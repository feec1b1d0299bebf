"""Every setting of mask2anomaly as one tree of frozen, typed dataclasses.

Defaults are the values of the official Mask2Anomaly Cityscapes R-50 configs (spec
official-implementation.md §2). YAML files list only what differs from them; `--set a.b=value`
overrides are parsed with `ast.literal_eval` and checked against the field's type.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError

IGNORE_INDEX = 255

# Every choice of the package, spelled once; the modules that branch on a choice import its type
# and list its values with `choices(...)`.
BackboneDepth = Literal[18, 34, 50]
CrossAttention = Literal["global", "masked", "cross"]  # Mask2Anomaly GMA / Mask2Former / plain
Refinement = Literal["official", "paper", "none"]
Precision = Literal["fp32", "tf32", "fp16", "bf16"]
OutlierLossKind = Literal["margin", "bce", "score_margin"]
Protocol = Literal["smiyc", "exact", "mask2anomaly"]
TrackName = Literal["anomaly", "obstacle"]


def choices(literal: Any) -> tuple[Any, ...]:
    """The values of a Literal type, in declaration order."""
    return typing.get_args(literal)


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not fit the config tree."""


@dataclass(frozen=True)
class BackboneConfig:
    depth: BackboneDepth = 50
    # Channels of the stem and of the first stage's bottleneck (64 for the standard ResNets);
    # smaller values give a cheap CPU backbone with the same output contract.
    base_width: int = 64
    # The official runs freeze the whole ResNet (FREEZE_AT 5) with FrozenBatchNorm in both stages.
    freeze: bool = True


@dataclass(frozen=True)
class PixelDecoderConfig:
    conv_dim: int = 256
    mask_dim: int = 256
    num_encoder_layers: int = 6
    encoder_ffn_dim: int = 1024  # hard-coded in the official msdeformattn.py
    num_heads: int = 8
    num_points: int = 4
    num_groups: int = 32  # GroupNorm groups
    dropout: float = 0.0


@dataclass(frozen=True)
class DecoderConfig:
    hidden_dim: int = 256
    num_queries: int = 100
    num_heads: int = 8
    ffn_dim: int = 2048
    num_layers: int = 9  # real layer count (official DEC_LAYERS 10 counts the query prediction)
    # "global": global masked attention (Mask2Anomaly); "masked": Mask2Former; "cross": no mask.
    cross_attention: CrossAttention = "global"
    dropout: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 19
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 32


@dataclass(frozen=True)
class ScoringConfig:
    # "official": the official inference (train IDs 2..10, i.e. stuff without road/sidewalk);
    # "paper": every stuff class except road (paper §3.4); "none": no refinement.
    refinement: Refinement = "official"
    refine_class_threshold: float = 0.95  # query kept when its max softmax score is above this
    refine_mask_threshold: float = 0.5  # pixel refined where score * sigmoid(mask) >= this


@dataclass(frozen=True)
class InferenceConfig:
    resize: bool = True
    min_size: int = 1024  # shortest edge after resizing (official MIN_SIZE_TEST)
    max_size: int = 2048  # longest edge cap (official MAX_SIZE_TEST)
    flip: bool = True  # horizontal-flip averaging of the anomaly map (official script)
    # fp32 reproduces the official outputs (TF32 off on GPUs: with it, logits move by ~0.3);
    # tf32, fp16 and bf16 trade that for speed.
    precision: Precision = "fp32"


@dataclass(frozen=True)
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True


@dataclass(frozen=True)
class OutlierConfig:
    enabled: bool = False  # official OOD_FINETUNE
    # margin: Eq. 8 as the official code computes it; bce: its alternative; score_margin: the
    # margin on the anomaly score 1 + l_N, as the paper's text describes Eq. 8 (not official).
    loss: OutlierLossKind = "margin"
    weight: float = 1.0
    margin: float = 1.0  # official code; the paper states 0.75
    void_as_inlier: bool = True  # official: void pixels count as inliers in the loss
    anomaly_mix_prob: float = 0.2
    paste_scale: tuple[float, float] = (1.0, 1.0)  # official: pasted at original size
    # COCO selection filter (Meta-OOD's, used by the official outlier set): images with any of
    # these categories are dropped, and images under min_size pixels in height or width.
    coco_excluded_categories: tuple[str, ...] = (
        "person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign",
    )  # fmt: skip
    coco_min_size: int = 480


@dataclass(frozen=True)
class DataConfig:
    base_size: int = 1024
    # Shortest-edge sizes (ResizeShortestEdge "choice"), 0.5..2.0 x base size, official list.
    train_min_sizes: tuple[int, ...] = (
        512,
        614,
        716,
        819,
        921,
        1024,
        1126,
        1228,
        1331,
        1433,
        1536,
        1638,
        1740,
        1843,
        1945,
        2048,
    )
    train_max_size: int = 4096
    crop_size: tuple[int, int] = (380, 760)  # H, W
    color_jitter: bool = True
    flip: bool = True
    num_workers: int = 4
    # Keep decoded training images and labels in memory (one copy per loader worker): skips
    # PNG decoding after the first epoch; for small datasets (the demo), not full Cityscapes.
    cache_images: bool = False


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_lr_multiplier: float = 0.1
    max_iters: int = 90000
    poly_power: float = 0.9
    clip_grad_norm: float = 0.01
    amp: bool = True
    # Convolutions in NHWC layout (weights and input images): same arithmetic, faster oneDNN
    # kernels on CPU for the small demo model.
    channels_last: bool = False
    checkpoint_every: int = 45000
    eval_every: int = 5000
    log_every: int = 20
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    protocol: Protocol = "smiyc"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def with_overrides(self, overrides: typing.Sequence[str]) -> Config:
        """This config with `section.key=value` overrides applied (each checked like YAML)."""
        values = config_to_dict(self)
        for text in overrides:
            values = deep_merge(values, parse_override(text))
        return config_from_dict(values)


# ---------------------------------------------------------------------------------------------
# Loading, overriding, validating


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Return `value` converted to the type `hint`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint) or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _check_value(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))
        )
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def nearest_name(key: str, names: list[str]) -> str | None:
    """The valid name a mistyped `key` most likely meant: an abbreviation ("learning_rate" ->
    "lr"), a name contained in the key or containing it, else the closest spelling."""
    initials = "".join(word[:1] for word in key.split("_"))
    for name in names:
        if name == initials:
            return name
    contained = [n for n in names if n in key or key in n]
    if contained:
        return min(contained, key=lambda n: abs(len(n) - len(key)))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
    return close[0] if close else None


def _unknown_key(cls: type, key: str, where: str) -> ConfigError:
    close = nearest_name(key, [f.name for f in dataclasses.fields(cls)])
    hint = f"; did you mean '{close}'?" if close else ""
    prefix = f"{where}." if where else ""
    return ConfigError(f"unknown key '{prefix}{key}'{hint}")


def _build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Construct dataclass `cls` from a (partial) mapping, defaults for what is missing."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key(cls, str(key), where)
        kwargs[key] = _check_value(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


YAML_WORDS = {"true": True, "false": False, "null": None, "~": None}


def parse_override(text: str) -> dict[str, Any]:
    """`"train.lr=1e-5"` -> `{"train": {"lr": 1e-5}}` (values parsed with ast.literal_eval;
    YAML's true / false / null spellings are accepted too)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    word = raw.strip().lower()
    value: Any
    if word in YAML_WORDS:
        value = YAML_WORDS[word]
    else:
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()  # bare words such as `masked` are strings
    nested: Any = value
    for part in reversed(dotted.strip().split(".")):
        nested = {part: nested}
    return nested


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from a nested mapping (the YAML content), rejecting unknown keys."""
    return _build(Config, values or {})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (lists for tuples) suitable for YAML and checkpoints."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def packaged_config_names() -> list[str]:
    """Names of the configs shipped with the package (usable as `--config NAME`)."""
    folder = resources.files("mask2anomaly") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_name: str | Path) -> dict[str, Any]:
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in packaged_config_names():
        text = (resources.files("mask2anomaly") / "configs" / f"{path_or_name}.yaml").read_text()
        source = f"packaged config '{path_or_name}'"
    elif path.exists():
        text, source = path.read_text(), str(path)
    else:
        names = ", ".join(packaged_config_names())
        raise ConfigError(f"{path_or_name}: no such file or packaged config (packaged: {names})")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return values


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Config from a YAML file (or packaged config name) plus `section.key=value` overrides."""
    values: dict[str, Any] = _read_yaml(path) if path is not None else {}
    where = f"{path}: " if path is not None else ""
    try:
        return config_from_dict(values).with_overrides(overrides)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

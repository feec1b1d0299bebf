# length: every setting with its type, range and default, and the one loader that checks them
"""Every setting of mask2anomaly as one tree of frozen, typed dataclasses.

Defaults are the values of the official Mask2Anomaly Cityscapes R-50 configs (spec
official-implementation.md §2). YAML files list only what differs from them; `--set a.b=value`
overrides are parsed with `ast.literal_eval` and checked against the field's type.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

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
# anomaly scores on mask-classification outputs (scoring/scores.py); the first is Eq. 2
ScoreName = Literal["mask2anomaly", "msp", "maxlogit", "entropy", "energy", "rba", "eam", "void"]
DEFAULT_SCORE: ScoreName = "mask2anomaly"
# thresholds an evaluation stores per score, for open-set output (evaluation/operating_points.py)
OperatingPoint = Literal["tpr95", "fpr5", "best-f1"]


def choices(literal: Any) -> tuple[Any, ...]:
    """The values of a Literal type, in declaration order."""
    return typing.get_args(literal)


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not fit the config tree."""


@dataclass(frozen=True)
class Range:
    """The valid values of a number field (bounds inclusive unless open), or of every element
    of a tuple field, which must then also be non-empty."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, tuple):
            if not value:
                raise ConfigError(f"{where}: must not be empty")
            for i, item in enumerate(value):
                self.check(item, f"{where}[{i}]")
            return
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if below or above:
            raise ConfigError(f"{where}: {value!r} is not {self}")

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low}, {self.high}{right}"


# Field types with their valid ranges, declared once and used next to each field.
PositiveInt = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]
NonNegative = Annotated[float, Range(0.0)]
Positive = Annotated[float, Range(0.0, low_open=True)]
Probability = Annotated[float, Range(0.0, 1.0)]
Dropout = Annotated[float, Range(0.0, 1.0, high_open=True)]


@dataclass(frozen=True)
class BackboneConfig:
    depth: BackboneDepth = 50
    # Channels of the stem and of the first stage's bottleneck (64 for the standard ResNets);
    # smaller values give a cheap CPU backbone with the same output contract.
    base_width: PositiveInt = 64
    # The official runs freeze the whole ResNet (FREEZE_AT 5) with FrozenBatchNorm in both stages.
    freeze: bool = True


@dataclass(frozen=True)
class PixelDecoderConfig:
    conv_dim: PositiveInt = 256
    mask_dim: PositiveInt = 256
    num_encoder_layers: PositiveInt = 6
    encoder_ffn_dim: PositiveInt = 1024  # hard-coded in the official msdeformattn.py
    num_heads: PositiveInt = 8
    num_points: PositiveInt = 4
    num_groups: PositiveInt = 32  # GroupNorm groups (divide conv_dim)
    dropout: Dropout = 0.0


@dataclass(frozen=True)
class DecoderConfig:
    hidden_dim: PositiveInt = 256
    num_queries: PositiveInt = 100
    num_heads: PositiveInt = 8  # divides hidden_dim
    ffn_dim: PositiveInt = 2048
    # real layer count (official DEC_LAYERS 10 counts the query prediction)
    num_layers: PositiveInt = 9
    # "global": global masked attention (Mask2Anomaly); "masked": Mask2Former; "cross": no mask.
    cross_attention: CrossAttention = "global"
    dropout: Dropout = 0.0


@dataclass(frozen=True)
class ModelConfig:
    num_classes: PositiveInt = 19
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255
    pixel_std: Annotated[tuple[float, float, float], Range(0.0, low_open=True)] = (
        58.395,
        57.12,
        57.375,
    )
    size_divisibility: PositiveInt = 32


@dataclass(frozen=True)
class ScoringConfig:
    # "official": the official inference (train IDs 2..10, i.e. stuff without road/sidewalk);
    # "paper": every stuff class except road (paper §3.4); "none": no refinement.
    refinement: Refinement = "official"
    # a query is kept when its max softmax score is above this
    refine_class_threshold: Probability = 0.95
    refine_mask_threshold: Probability = 0.5  # pixel refined where score * sigmoid(mask) >= this


@dataclass(frozen=True)
class InferenceConfig:
    resize: bool = True
    min_size: PositiveInt = 1024  # shortest edge after resizing (official MIN_SIZE_TEST)
    max_size: PositiveInt = 2048  # longest edge cap (official MAX_SIZE_TEST)
    flip: bool = True  # horizontal-flip averaging of the anomaly map (official script)
    # fp32 reproduces the official outputs (TF32 off on GPUs: with it, logits move by ~0.3);
    # tf32, fp16 and bf16 trade that for speed.
    precision: Precision = "fp32"
    # torch.compile the deformable attention's sampling arithmetic (bitwise the same maps;
    # seconds of compiling on the first image of each size; needs a C compiler)
    compile: bool = False


@dataclass(frozen=True)
class LossConfig:
    class_weight: NonNegative = 2.0
    mask_weight: NonNegative = 5.0
    dice_weight: NonNegative = 5.0
    no_object_weight: NonNegative = 0.1
    num_points: PositiveInt = 12544
    oversample_ratio: Annotated[float, Range(1.0)] = 3.0
    importance_sample_ratio: Probability = 0.75
    deep_supervision: bool = True


@dataclass(frozen=True)
class OutlierConfig:
    enabled: bool = False  # official OOD_FINETUNE
    # margin: Eq. 8 as the official code computes it; bce: its alternative; score_margin: the
    # margin on the anomaly score 1 + l_N, as the paper's text describes Eq. 8 (not official).
    loss: OutlierLossKind = "margin"
    weight: NonNegative = 1.0
    margin: NonNegative = 1.0  # official code; the paper states 0.75
    void_as_inlier: bool = True  # official: void pixels count as inliers in the loss
    anomaly_mix_prob: Probability = 0.2
    # official: pasted at original size
    paste_scale: Annotated[tuple[float, float], Range(0.0, low_open=True)] = (1.0, 1.0)
    # COCO selection filter (Meta-OOD's, used by the official outlier set): images with any of
    # these categories are dropped, and images under min_size pixels in height or width.
    coco_excluded_categories: tuple[str, ...] = (
        "person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign",
    )  # fmt: skip
    coco_min_size: Count = 480


@dataclass(frozen=True)
class DataConfig:
    base_size: PositiveInt = 1024
    # Shortest-edge sizes (ResizeShortestEdge "choice"), 0.5..2.0 x base size, official list.
    train_min_sizes: Annotated[tuple[int, ...], Range(1)] = (
        512, 614, 716, 819, 921, 1024, 1126, 1228, 1331, 1433, 1536, 1638, 1740, 1843, 1945, 2048,
    )  # fmt: skip
    train_max_size: PositiveInt = 4096
    crop_size: Annotated[tuple[int, int], Range(1)] = (380, 760)  # H, W
    color_jitter: bool = True
    flip: bool = True
    num_workers: Count = 4
    # Keep decoded training images and labels in memory (one copy per loader worker): skips
    # PNG decoding after the first epoch; for small datasets (the demo), not full Cityscapes.
    cache_images: bool = False


@dataclass(frozen=True)
class TrainConfig:
    batch_size: PositiveInt = 16
    lr: Positive = 1e-4
    weight_decay: NonNegative = 0.05
    weight_decay_norm: NonNegative = 0.0
    weight_decay_embed: NonNegative = 0.0
    backbone_lr_multiplier: NonNegative = 0.1
    max_iters: PositiveInt = 90000
    poly_power: NonNegative = 0.9
    clip_grad_norm: NonNegative = 0.01  # 0: no clipping
    amp: bool = True
    # Convolutions in NHWC layout (weights and input images): same arithmetic, faster oneDNN
    # kernels on CPU for the small demo model.
    channels_last: bool = False
    checkpoint_every: PositiveInt = 45000
    eval_every: Count = 5000  # 0: never
    log_every: PositiveInt = 20
    seed: Count = 0


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
    if origin is Annotated:
        inner, *constraints = typing.get_args(hint)
        value = _check_value(value, inner, where)
        for constraint in constraints:
            constraint.check(value, where)
        return value
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
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 as a string (it wants 1.0e-4)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


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
    hints = typing.get_type_hints(cls, include_extras=True)
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
    """Build a Config from a nested mapping (the YAML content), rejecting unknown keys, values
    of the wrong type or outside their range, and combinations that cannot work."""
    if not isinstance(values, dict):
        raise ConfigError(f"expected a mapping of sections, got {type(values).__name__}")
    cfg = _build(Config, values)
    check_combinations(cfg)
    return cfg


def check_combinations(cfg: Config) -> None:
    """The rules that involve several fields, in one place."""
    model, pixel = cfg.model, cfg.model.pixel_decoder
    rules = [
        (model.decoder.hidden_dim % model.decoder.num_heads == 0,
         "model.decoder.num_heads must divide model.decoder.hidden_dim"),
        (pixel.conv_dim % pixel.num_heads == 0,
         "model.pixel_decoder.num_heads must divide model.pixel_decoder.conv_dim"),
        (pixel.conv_dim % pixel.num_groups == 0,
         "model.pixel_decoder.num_groups must divide model.pixel_decoder.conv_dim"),
        (cfg.inference.min_size <= cfg.inference.max_size,
         "inference.min_size must not exceed inference.max_size"),
        (cfg.outlier.paste_scale[0] <= cfg.outlier.paste_scale[1],
         "outlier.paste_scale must be [low, high] with low <= high"),
    ]  # fmt: skip
    for holds, message in rules:
        if not holds:
            raise ConfigError(message)


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
    """A config file, or a packaged config by name (a folder of that name does not hide it)."""
    path = Path(path_or_name)
    if path.is_file():
        source = str(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not a text file"
            raise ConfigError(f"{source}: cannot read the config ({reason})") from None
    elif str(path_or_name) in packaged_config_names():
        text = (resources.files("mask2anomaly") / "configs" / f"{path_or_name}.yaml").read_text()
        source = f"packaged config '{path_or_name}'"
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

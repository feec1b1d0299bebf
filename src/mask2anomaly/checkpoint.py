"""Checkpoints: native save/load, and import of official (detectron2) and backbone weights.

A native checkpoint is a torch file {"format": "mask2anomaly", "version", "config", "model", ...}
holding the resolved config, so `load_model(path)` needs no YAML. `import_official` reads an
official Mask2Anomaly / Mask2Former file (bare state dict, {"model": ...}, a full detectron2
training checkpoint, or a detectron2 .pkl): every key is consumed or explicitly ignored, and any
missing, unexpected or mis-shaped key is an error. Untrusted files load with weights_only=True.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, ConfigError, config_from_dict, config_to_dict
from .distributed import resolve_device
from .errors import UserError
from .fileio import atomic_path
from .model import Mask2Anomaly, build_model
from .model.backbone import ResNet

FORMAT, VERSION = "mask2anomaly", 1

# Official key prefixes -> ours (first match wins); everything else keeps its name.
OFFICIAL_RENAMES = (
    ("sem_seg_head.pixel_decoder.transformer.level_embed", "pixel_decoder.encoder.level_embed"),
    ("sem_seg_head.pixel_decoder.transformer.encoder.", "pixel_decoder.encoder."),
    ("sem_seg_head.pixel_decoder.adapter_1.", "pixel_decoder.lateral_conv."),
    ("sem_seg_head.pixel_decoder.layer_1.", "pixel_decoder.output_conv."),
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "decoder."),
)
# Present in official files, unused by the forward pass: the GMA layer's `fusion_layer` conv,
# the loss buffer `criterion.empty_weight`, BatchNorm step counters.
OFFICIAL_IGNORED = re.compile(r"(\.fusion_layer\.|^criterion\.empty_weight$|num_batches_tracked$)")
# torchvision ResNet names -> detectron2 names (the Barlow Twins resnet50.pth uses these).
TORCHVISION_RENAMES = (
    (re.compile(r"^conv1\.weight$"), "stem.conv1.weight"),
    (re.compile(r"^bn1\.(.+)$"), r"stem.conv1.norm.\1"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)\.weight$"), "res{0}.{1}.conv{2}.weight"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$"), "res{0}.{1}.conv{2}.norm.{3}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0\.weight$"), "res{0}.{1}.shortcut.weight"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$"), "res{0}.{1}.shortcut.norm.{2}"),
)
TORCHVISION_IGNORED = re.compile(r"(^fc\.|num_batches_tracked$)")


# ---------------------------------------------------------------------------------------------
# Reading files


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler for detectron2 .pkl weights: only numpy arrays and plain containers."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_weights_file(path: str | Path, *, trusted: bool = False) -> dict[str, Any]:
    """Load a .pth/.pt (torch) or .pkl (detectron2) file as a dict, with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if path.suffix == ".pkl":
            with path.open("rb") as f:
                data = _NumpyUnpickler(f, encoding="latin1").load()
        else:
            data = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise UserError(f"{path}: {_unpickling_problem(str(error), trusted)}") from None
    except Exception as error:  # noqa: BLE001 — torch.load raises anything on a foreign file
        raise UserError(f"{path}: not a readable weights file ({_first_line(error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict of weights, got {type(data).__name__}")
    return data


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _unpickling_problem(message: str, trusted: bool) -> str:
    """One line from torch's / our unpickler's multi-line refusal."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)|refusing to load (\S+)", message)
    if match:
        name = match.group(1) or match.group(2)
        hint = "" if trusted else " (re-run with --trusted only for a file you trust)"
        return f"cannot be read safely: it contains the Python object {name}{hint}"
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", message, re.DOTALL)
    detail = reason.group(1).strip().splitlines()[0] if reason else message.splitlines()[0]
    return f"not a readable weights file ({detail})"


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value


def _state_dict_of(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Bare state dict, {"model": sd}, or a full detectron2 training checkpoint -> tensors."""
    sd = data["model"] if isinstance(data.get("model"), dict) else data
    return {k: _as_tensor(v) for k, v in sd.items() if isinstance(v, (torch.Tensor, np.ndarray))}


# ---------------------------------------------------------------------------------------------
# Native checkpoints


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temporary file in the same folder, renamed over `path`."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def save_checkpoint(path: str | Path, model: Mask2Anomaly, cfg: Config, **extra: Any) -> None:
    """Write model weights, the resolved config and `extra` (training state) atomically."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        **extra,
    }
    atomic_torch_save(state, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    data = read_weights_file(path)
    if data.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a mask2anomaly checkpoint (convert official weights with "
            "`mask2anomaly convert OFFICIAL.pth OUT.pt`)"
        )
    version = data.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{path}: checkpoint version {version!r} is not supported (<= {VERSION})")
    for key, kind in (("config", dict), ("model", dict)):
        if not isinstance(data.get(key), kind):
            raise UserError(f"{path}: malformed checkpoint: '{key}' is not a {kind.__name__}")
    bad = [k for k, v in data["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: malformed checkpoint: model entry {bad[0]} is not a tensor")
    return data


def _config_of(data: dict[str, Any], path: str | Path, overrides: Sequence[str]) -> Config:
    try:
        return config_from_dict(data.get("config") or {}).with_overrides(overrides)
    except ConfigError as error:
        raise UserError(f"{path}: {error}") from None


def load_checkpoint_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The config stored in a native checkpoint, with `section.key=value` overrides (not of
    `model.*`: the architecture is the checkpoint's)."""
    reject_model_overrides(overrides, path)
    return _config_of(read_checkpoint(path), path, overrides)


def reject_model_overrides(overrides: Sequence[str], path: str | Path) -> None:
    """A `model.*` override cannot apply to trained weights: say so instead of ignoring it."""
    for text in overrides:
        if text.strip().startswith("model."):
            raise UserError(
                f"--set {text}: the model comes from the checkpoint {path} and cannot be changed"
            )


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    overrides: Sequence[str] = (),
) -> Mask2Anomaly:
    """Build the model described by a native checkpoint and load its weights (eval mode)."""
    reject_model_overrides(overrides, path)
    data = read_checkpoint(path)
    cfg = _config_of(data, path, overrides)
    model = build_model(cfg.model)
    load_exactly(model, _state_dict_of({"model": data["model"]}), path)
    return model.to(resolve_device(device)).eval()


def load_exactly(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Any) -> None:
    """Load `state` into `module`, raising one clear error for any key/shape mismatch."""
    expected = module.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{len(names)} {what}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
        for what, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        )
        if names
    ]
    if problems:
        raise UserError(f"{source}: weights do not fit the model: " + "; ".join(problems))
    not_finite = [
        k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if not_finite:
        raise UserError(f"{source}: weights hold NaN or inf ({', '.join(sorted(not_finite)[:4])})")
    module.load_state_dict({**{k: expected[k] for k in optional}, **state}, strict=True)


# ---------------------------------------------------------------------------------------------
# Official weights


def official_to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official detectron2 keys to ours, dropping the explicitly ignored ones."""
    native = {}
    for key, value in state.items():
        if OFFICIAL_IGNORED.search(key):
            continue
        for old, new in OFFICIAL_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        native[key] = value
    return native


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {m.group(1) for k in state if (m := re.match(pattern, k))}
    return len(found)


def infer_model_values(state: dict[str, torch.Tensor], encoder_heads: int = 8) -> dict[str, Any]:
    """Model settings read off an official state dict (classes, queries, layers, widths).

    Head counts cannot be read off weights: `encoder_heads` (default 8, official) is used to
    derive the deformable attention's number of sampling points.
    """
    try:
        has_bottleneck = any(re.match(r"backbone\.res2\.0\.conv3\.", k) for k in state)
        num_res4 = _count(state, r"backbone\.res4\.(\d+)\.")
        depth = {(True, 6): 50, (False, 6): 34, (False, 2): 18}.get((has_bottleneck, num_res4))
        pd = "sem_seg_head.pixel_decoder."
        dc = "sem_seg_head.predictor."
        values: dict[str, Any] = {
            "num_classes": state[dc + "class_embed.weight"].shape[0] - 1,
            "backbone": {"base_width": state["backbone.stem.conv1.weight"].shape[0]},
            "pixel_decoder": {
                "conv_dim": state[pd + "input_proj.0.0.weight"].shape[0],
                "mask_dim": state[pd + "mask_features.weight"].shape[0],
                "num_encoder_layers": _count(
                    state, re.escape(pd) + r"transformer\.encoder\.layers\.(\d+)\."
                ),
                "encoder_ffn_dim": state[pd + "transformer.encoder.layers.0.linear1.weight"].shape[
                    0
                ],
                "num_points": state[
                    pd + "transformer.encoder.layers.0.self_attn.sampling_offsets.bias"
                ].shape[0]
                // (encoder_heads * 3 * 2),
            },
            "decoder": {
                "hidden_dim": state[dc + "query_feat.weight"].shape[1],
                "num_queries": state[dc + "query_feat.weight"].shape[0],
                "num_layers": _count(state, re.escape(dc) + r"transformer_ffn_layers\.(\d+)\."),
                "ffn_dim": state[dc + "transformer_ffn_layers.0.linear1.weight"].shape[0],
                "cross_attention": "global"
                if any("multihead_attn_foreground" in k for k in state)
                else "masked",
            },
        }
    except KeyError as error:
        raise UserError(
            f"not an official Mask2Anomaly/Mask2Former state dict: no key {error}"
        ) from None
    if depth is None:
        raise UserError(f"unsupported backbone: {num_res4} res4 blocks (ResNet-18/34/50 only)")
    values["backbone"]["depth"] = depth
    return values


def import_official(
    path: str | Path, *, overrides: Sequence[str] = (), trusted: bool = False
) -> tuple[Mask2Anomaly, Config]:
    """Official Mask2Anomaly weights -> (model in eval mode, resolved config).

    The model settings are read off the weights; `overrides` (e.g. "scoring.refinement=paper")
    set anything else. Backbone settings: FrozenBatchNorm, as in the official training.
    """
    state = _state_dict_of(read_weights_file(path, trusted=trusted))
    requested = _config_of({}, path, overrides)  # validates the overrides first
    try:
        values = {"model": infer_model_values(state, requested.model.pixel_decoder.num_heads)}
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    cfg = _config_of({"config": values}, path, overrides)
    model = build_model(cfg.model)
    load_exactly(model, official_to_native(state), path)
    return model.eval(), cfg


def backbone_to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision or detectron2 ResNet names (with or without "backbone.") -> ours."""
    native = {}
    torchvision = any(k.startswith(("layer1.", "bn1.")) for k in state)
    for key, value in state.items():
        if torchvision:
            if TORCHVISION_IGNORED.search(key):
                continue
            for pattern, replacement in TORCHVISION_RENAMES:
                match = pattern.match(key)
                if match:
                    groups = list(match.groups())
                    if key.startswith("layer"):
                        groups[0] = str(int(groups[0]) + 1)  # layer1 -> res2
                        key = replacement.format(*groups)
                    else:
                        key = match.expand(replacement)
                    break
        else:
            if key.endswith("num_batches_tracked"):
                continue
            key = key.removeprefix("backbone.")
        native[key] = value
    return native


def load_backbone_weights(backbone: ResNet, path: str | Path, *, trusted: bool = False) -> None:
    """Fill a ResNet from a torchvision-style (e.g. Barlow Twins resnet50.pth) or detectron2-style
    file; every key must be consumed (only `fc.*` and step counters are ignored)."""
    state = _state_dict_of(read_weights_file(path, trusted=trusted))
    if any(re.match(r"res\d_\d+_branch", k) for k in state):
        raise UserError(
            f"{path}: caffe2-style (MSRA) ResNet weights are not supported; "
            "use torchvision-style or detectron2-style names"
        )
    load_exactly(backbone, backbone_to_native(state), path)

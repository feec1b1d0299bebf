"""ONNX export of the network and an onnxruntime stand-in for it (issue 7).

The exported graph is the network alone: a normalised, padded image batch [B, 3, H, W] (what
`Mask2Anomaly.preprocess` makes) -> class_logits [B, Q, K+1] and mask_logits [B, Q, H/4, W/4] of
the final prediction. Pre- and post-processing (resize, flip averaging, scoring, refinement)
stay in `Predictor`; `OnnxNetwork` offers the part of the model interface `Predictor` uses, so
the same Predictor runs either network. The resolved config travels in the ONNX metadata.
Needs the optional `export` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError, config_from_dict, config_to_dict
from ..errors import UserError
from ..fileio import atomic_path
from ..model import Mask2Anomaly
from ..model.mask2anomaly import ModelOutput

CONFIG_KEY = "mask2anomaly.config"  # ONNX metadata entry holding the config as JSON
INPUT_NAME, OUTPUT_NAMES = "images", ("class_logits", "mask_logits")
MAX_DYNAMIC_SIDE = 8192  # largest padded side a dynamic export accepts (pixels)
MAX_DYNAMIC_BATCH = 64
EXPORT_EXTRA_HINT = "ONNX needs the export extra: pip install 'mask2anomaly[export]'"


class FinalPrediction(nn.Module):
    """The network with tensor outputs: images [B, 3, H, W] -> (class_logits, mask_logits)."""

    def __init__(self, model: Mask2Anomaly) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model.infer(images)
        return output.class_logits, output.mask_logits


def _dynamic_shapes(divisibility: int) -> dict[str, dict[int, Any]]:
    """Batch, height and width free; height and width multiples of `divisibility`."""
    dim = torch.export.Dim
    side = MAX_DYNAMIC_SIDE // divisibility
    return {
        INPUT_NAME: {
            0: dim("batch", min=1, max=MAX_DYNAMIC_BATCH),
            2: divisibility * dim("height_blocks", min=1, max=side),
            3: divisibility * dim("width_blocks", min=1, max=side),
        }
    }


def export_onnx(
    model: Mask2Anomaly,
    cfg: Config,
    path: str | Path,
    *,
    height: int,
    width: int,
    dynamic: bool = False,
    opset: int | None = None,
) -> None:
    """Write the network as ONNX (atomically), the config in its metadata.

    Args:
        height, width: the padded input size of a static export (multiples of the model's
            size divisibility); for a dynamic export, the size of the example input.
        dynamic: batch, height and width free (multiples of the divisibility) instead of fixed.
        opset: ONNX opset (None: torch's default).
    """
    _require("onnxscript")
    divisibility = model.size_divisibility
    if height % divisibility or width % divisibility or height <= 0 or width <= 0:
        raise UserError(f"--height and --width must be positive multiples of {divisibility}")
    model = model.eval()
    example = torch.zeros(2 if dynamic else 1, 3, height, width, device=model.pixel_mean.device)

    with torch.no_grad():
        program = torch.onnx.export(
            FinalPrediction(model).eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=_dynamic_shapes(divisibility) if dynamic else None,
            verbose=False,
        )
    assert program is not None  # the dynamo exporter returns its program
    program.model.metadata_props[CONFIG_KEY] = json.dumps(config_to_dict(cfg))
    with atomic_path(path, suffix=".onnx") as temporary:
        program.save(str(temporary), external_data=False)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(EXPORT_EXTRA_HINT) from None


class OnnxNetwork:
    """An exported network run by onnxruntime, usable as `Predictor(OnnxNetwork(path))`.

    Provides what Predictor uses of Mask2Anomaly: `preprocess`, `infer` on a batch
    (-> ModelOutput without aux predictions), `eval()`, and `pixel_mean` (whose device, CPU, is
    where Predictor post-processes). A static export takes only its own input size; batches
    are run one image at a time when its batch size is fixed.
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None) -> None:
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            self.session = ort.InferenceSession(
                str(path), providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            first = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
            raise UserError(f"{path}: not a loadable ONNX model ({first})") from None
        self.path = path
        self.config = _config_of_session(self.session, path)
        self.pixel_mean = torch.tensor(self.config.model.pixel_mean).view(3, 1, 1)
        self.pixel_std = torch.tensor(self.config.model.pixel_std).view(3, 1, 1)
        self.size_divisibility = self.config.model.size_divisibility
        self.input_shape = list(self.session.get_inputs()[0].shape)  # ints or dim names

    def eval(self) -> OnnxNetwork:
        return self

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Same normalisation and padding as Mask2Anomaly.preprocess (shared code)."""
        return Mask2Anomaly.preprocess(self, images)  # type: ignore[arg-type]

    def infer(self, images: torch.Tensor) -> ModelOutput:
        """images: normalised [B, 3, H, W] -> ModelOutput(class_logits, mask_logits, aux=())."""
        fixed = [s if isinstance(s, int) else None for s in self.input_shape]
        if fixed[2:] != [None, None] and list(images.shape[2:]) != fixed[2:]:
            raise UserError(
                f"{self.path} was exported for {fixed[2]}x{fixed[3]} inputs, this one is "
                f"{images.shape[2]}x{images.shape[3]} after resizing and padding (export with "
                "--dynamic, or with that --height/--width)"
            )
        array = images.detach().cpu().float().numpy()
        parts = [array] if fixed[0] is None else [array[i : i + 1] for i in range(len(array))]
        outputs = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: part}) for part in parts]
        class_logits = np.concatenate([o[0] for o in outputs])
        mask_logits = np.concatenate([o[1] for o in outputs])
        return ModelOutput(torch.from_numpy(class_logits), torch.from_numpy(mask_logits), ())


def _config_of_session(session: Any, path: Path) -> Config:
    metadata = session.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in metadata:
        raise UserError(f"{path}: not exported by `mask2anomaly export` (no config in metadata)")
    try:
        return config_from_dict(json.loads(metadata[CONFIG_KEY]))
    except (ConfigError, ValueError) as error:
        raise UserError(f"{path}: bad config in metadata ({error})") from None


def onnx_max_differences(
    model: Mask2Anomaly, network: OnnxNetwork, images: torch.Tensor
) -> dict[str, float]:
    """Largest absolute difference of each output, PyTorch vs onnxruntime, on a normalised
    batch [B, 3, H, W] (B must fit the export)."""
    with torch.no_grad():
        expected = model.eval()(images.to(model.pixel_mean.device))
    got = network.infer(images)
    return {
        "class_logits": float((got.class_logits - expected.class_logits.cpu()).abs().max()),
        "mask_logits": float((got.mask_logits - expected.mask_logits.cpu()).abs().max()),
    }

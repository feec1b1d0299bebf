"""Predictor: RGB image(s) -> anomaly map and semantic map at the original resolution.

Follows the official inference path (spec official-implementation.md §6): resize the shortest
edge to 1024 (longest at most 2048, PIL bilinear, sizes rounded as detectron2 does), normalise,
pad to a multiple of 32, forward, upsample the mask logits to the padded size, crop, compute the
semantic probabilities and the refinement map, resize them back to the original size, score;
then the same on the horizontally flipped image, flipped back and averaged. Every step is
switchable through InferenceConfig and ScoringConfig.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import Config, InferenceConfig, ScoringConfig
from ..errors import UserError
from ..model import ModelOutput
from ..scoring import (
    anomaly_from_semantic,
    refine,
    refinement_map,
    refinement_queries,
    semantic_probs,
)

QUERY_CHUNK = 25  # queries upsampled to full resolution at once (bounds memory)


class Network(Protocol):
    """What Predictor needs of a network: Mask2Anomaly, or an exported one (OnnxNetwork)."""

    pixel_mean: torch.Tensor  # its device is where Predictor works

    def eval(self) -> Any: ...

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor: ...

    def __call__(self, images: torch.Tensor) -> ModelOutput: ...


class ViewResult(NamedTuple):
    """One view (image or its flip) at the original size: anomaly [H, W], refined anomaly,
    refinement keep mask (1 kept, 0 zeroed), semantic probabilities [K, H, W]."""

    anomaly: torch.Tensor
    refined: torch.Tensor
    keep: torch.Tensor
    semantic: torch.Tensor


AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """fp32: exact float32 (TF32 off, the official numbers); tf32: TF32 matmuls and convs on
    GPUs that have them; fp16 / bf16: autocast (the pixel decoder stays float32)."""
    with ExitStack() as stack:
        if device.type == "cuda":
            stack.callback(
                _set_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            )
            _set_tf32(precision != "fp32", precision != "fp32")
        if precision in AUTOCAST_DTYPES:
            stack.enter_context(torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]))
        yield


@dataclass(frozen=True)
class Prediction:
    """anomaly_score: float32 [H, W] (refined when refinement is on; higher = more anomalous);
    anomaly_score_unrefined: float32 [H, W]; semantic: uint8 [H, W] train IDs (unflipped view);
    refinement_keep: float32 [H, W], the refinement mask averaged over the views (1 = score kept
    in every view, 0 = zeroed in every view); semantic_probs: float32 [K, H, W] of the unflipped
    view, only when asked for."""

    anomaly_score: np.ndarray
    anomaly_score_unrefined: np.ndarray
    semantic: np.ndarray
    refinement_keep: np.ndarray
    semantic_probs: np.ndarray | None = None


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 ResizeShortestEdge output size (int(x + 0.5) rounding)."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def as_rgb_array(image: np.ndarray | torch.Tensor | Image.Image, name: str = "image") -> np.ndarray:
    """Any RGB image (HxWx3 uint8 array, 3xHxW uint8 tensor, PIL image) -> uint8 [H, W, 3]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise UserError(f"{name}: expected a [3, H, W] tensor, got shape {tuple(image.shape)}")
        image = image.permute(1, 2, 0).cpu().numpy()
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"{name}: expected an RGB image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise UserError(f"{name}: expected uint8 pixels 0..255, got {image.dtype}")
    return np.ascontiguousarray(image)


class Predictor:
    """Anomaly segmentation with a Mask2Anomaly model.

    Args:
        model: the network (put in eval mode here).
        scoring, inference: refinement and pre-/post-processing settings.
        batch_size: views (images or their flips) of equal size run in one forward.
    """

    def __init__(
        self,
        model: Network,
        *,
        scoring: ScoringConfig | None = None,
        inference: InferenceConfig | None = None,
        batch_size: int = 2,
    ) -> None:
        model.eval()
        self.model = model
        self.scoring = scoring or ScoringConfig()
        self.inference = inference or InferenceConfig()
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | torch.device = "cpu", overrides: Sequence[str] = ()
    ) -> Predictor:
        """Load a native checkpoint; `overrides` such as "scoring.refinement=none" apply."""
        from ..checkpoint import load_checkpoint_config, load_model

        cfg: Config = load_checkpoint_config(path, overrides)
        model = load_model(path, device=device)
        return cls(model, scoring=cfg.scoring, inference=cfg.inference)

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    def predict(
        self, image: np.ndarray | torch.Tensor | Image.Image, *, return_semantic_probs: bool = False
    ) -> Prediction:
        """One RGB image -> Prediction at its size."""
        return self.predict_batch([image], return_semantic_probs=return_semantic_probs)[0]

    @torch.no_grad()
    def predict_batch(
        self,
        images: Sequence[np.ndarray | torch.Tensor | Image.Image],
        *,
        return_semantic_probs: bool = False,
    ) -> list[Prediction]:
        """Images of any sizes -> one Prediction each (views of equal size share forwards)."""
        arrays = [as_rgb_array(im, f"image {i}") for i, im in enumerate(images)]
        views = [(i, False) for i in range(len(arrays))]
        if self.inference.flip:
            views += [(i, True) for i in range(len(arrays))]
        inputs = {view: self._prepare(arrays[view[0]], flip=view[1]) for view in views}
        groups: dict[tuple[int, ...], list[tuple[int, bool]]] = {}
        for view, tensor in inputs.items():
            groups.setdefault(tuple(tensor.shape), []).append(view)
        results: dict[tuple[int, bool], ViewResult] = {}
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                batch = self.model.preprocess([inputs[v] for v in chunk])
                with precision_context(self.inference.precision, self.device):
                    output = self.model(batch)
                for j, view in enumerate(chunk):
                    results[view] = self._postprocess(
                        output.class_logits[j].float(),
                        output.mask_logits[j].float(),
                        batch.shape[-2:],
                        inputs[view].shape[-2:],
                        arrays[view[0]].shape[:2],
                    )
        return [self._combine(results, i, return_semantic_probs) for i in range(len(arrays))]

    def _prepare(self, image: np.ndarray, *, flip: bool) -> torch.Tensor:
        """uint8 [H, W, 3] -> float32 [3, h, w] on the model's device (flipped, resized)."""
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
        cfg = self.inference
        if cfg.resize:
            h, w = resized_shape(image.shape[0], image.shape[1], cfg.min_size, cfg.max_size)
            if (h, w) != image.shape[:2]:
                image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
        return torch.from_numpy(image.copy()).permute(2, 0, 1).float().to(self.device)

    def _postprocess(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        padded: torch.Size,
        input_size: torch.Size,
        size: tuple[int, int],
    ) -> ViewResult:
        """One view's maps at the original size.

        Mask logits are upsampled to the padded input size, cropped to the input, and the
        semantic / refinement channels resized to the original size, as the official code does.
        """
        h, w = input_size
        size = (int(size[0]), int(size[1]))

        def mask_probs(index: torch.Tensor | slice) -> torch.Tensor:
            logits = F.interpolate(
                mask_logits[None, index], size=tuple(padded), mode="bilinear", align_corners=False
            )[0]
            return logits[:, :h, :w].sigmoid()

        def to_original(maps: torch.Tensor) -> torch.Tensor:
            if tuple(maps.shape[-2:]) == tuple(size):
                return maps
            return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]

        parts = (slice(s, s + QUERY_CHUNK) for s in range(0, mask_logits.shape[0], QUERY_CHUNK))
        semantic = sum(
            semantic_probs(class_logits[None, part], mask_probs(part)[None])[0] for part in parts
        )
        assert isinstance(semantic, torch.Tensor)
        semantic = to_original(semantic)
        anomaly = anomaly_from_semantic(semantic)
        scoring = self.scoring
        indices, scores = refinement_queries(
            class_logits, scoring.refinement, scoring.refine_class_threshold
        )
        keep = torch.ones_like(anomaly)
        if len(indices):
            refine_map = refinement_map(scores, mask_probs(indices), resize=to_original)
            keep = refine(keep, refine_map, scoring.refine_mask_threshold)
        return ViewResult(anomaly, anomaly * keep, keep, semantic)

    def _combine(
        self, results: dict[tuple[int, bool], ViewResult], index: int, return_semantic_probs: bool
    ) -> Prediction:
        """Average the unflipped view with the flipped one, flipped back (official TTA)."""
        view = results[(index, False)]
        anomaly, refined, keep = view.anomaly, view.refined, view.keep
        if self.inference.flip:
            other = results[(index, True)]
            anomaly = (anomaly + other.anomaly.flip(-1)) / 2
            refined = (refined + other.refined.flip(-1)) / 2
            keep = (keep + other.keep.flip(-1)) / 2
        semantic = view.semantic
        return Prediction(
            anomaly_score=refined.cpu().numpy(),
            anomaly_score_unrefined=anomaly.cpu().numpy(),
            semantic=semantic.argmax(0).to(torch.uint8).cpu().numpy(),
            refinement_keep=keep.cpu().numpy(),
            semantic_probs=semantic.cpu().numpy() if return_semantic_probs else None,
        )

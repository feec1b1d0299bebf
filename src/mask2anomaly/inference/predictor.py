"""Predictor: RGB image(s) -> anomaly map and semantic map at the original resolution.

Follows the official inference path (spec official-implementation.md §6): resize the shortest
edge to 1024 (longest at most 2048, PIL bilinear, sizes rounded as detectron2 does), normalise,
pad to a multiple of 32, forward, upsample the mask logits to the padded size, crop, compute the
semantic probabilities and the refinement map, resize them back to the original size, score;
then the same on the horizontally flipped image, flipped back and averaged. Every step is
switchable through InferenceConfig and ScoringConfig.

The upsampled mask probabilities are never held for all queries at full size: they are computed
in bands of rows (bitwise the rows of the full upsampling), each band reduced at once to the
semantic probabilities and the refinement channels (`bands.py`). `Predictor.timer` holds the
seconds spent per stage.

Several anomaly scores (`scoring/scores.py`) come from the same forward: the evidence they are
made of (the semantic probabilities, and where asked the no-object and EAM inlier masses) is
upsampled and resized back like the semantic probabilities, each score is computed from it per
view, refined, and flip-averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from ..config import DEFAULT_SCORE, Config, InferenceConfig, ScoringConfig
from ..errors import UserError
from ..model import ModelOutput
from ..model.deformable_attention import compiled_sampling
from ..scoring import refine, refinement_map, refinement_queries
from ..scoring.scores import check_scores, refined
from .bands import (
    ROW_BAND,
    ViewBands,
    ViewResult,
    resize_maps,
    scores_in_bands,
    upsampled_rows,
)
from .prediction import Prediction
from .query_masks import query_masks
from .runtime import (
    StageTimer,
    network_for,
    precision_context,
    release_memory,
    tune_allocator,
)

__all__ = ["Network", "Prediction", "Predictor", "as_rgb_array", "resized_shape", "upsampled_rows"]


class Network(Protocol):
    """What Predictor needs of a network: Mask2Anomaly, or an exported one (OnnxNetwork)."""

    pixel_mean: torch.Tensor  # its device is where Predictor works

    def eval(self) -> Any: ...

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor: ...

    def infer(self, images: torch.Tensor) -> ModelOutput: ...


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
        model: the network (put in eval mode here). For `inference.precision=bf16` on CPU the
            predictor runs a bfloat16 copy of it, made here.
        scoring, inference: refinement and pre-/post-processing settings.
        batch_size: views (images or their flips) of equal size run in one forward (default:
            1 on CPU, where a batch is no faster and needs more memory, else 2).
        scores: the anomaly scores to compute (names in `scoring.scores.SCORE_NAMES`), all
            from each view's one forward; the first is `Prediction.anomaly_score`.
    """

    def __init__(
        self,
        model: Network,
        *,
        scoring: ScoringConfig | None = None,
        inference: InferenceConfig | None = None,
        batch_size: int | None = None,
        scores: Sequence[str] = (DEFAULT_SCORE,),
    ) -> None:
        self.scores = check_scores(scores)
        model.eval()
        self.model = model
        self.scoring = scoring or ScoringConfig()
        self.inference = inference or InferenceConfig()
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else 2)
        if self.device.type == "cpu":
            tune_allocator()
        self.network = network_for(model, self.inference.precision, self.device)
        self.timer = StageTimer()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        overrides: Sequence[str] = (),
        scores: Sequence[str] = (DEFAULT_SCORE,),
    ) -> Predictor:
        """Load a native checkpoint; `overrides` such as "scoring.refinement=none" apply."""
        from ..checkpoint import load_checkpoint_config, load_model

        check_scores(scores)
        cfg: Config = load_checkpoint_config(path, overrides)
        model = load_model(path, device=device)
        return cls(model, scoring=cfg.scoring, inference=cfg.inference, scores=scores)

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    def predict(
        self,
        image: np.ndarray | torch.Tensor | Image.Image,
        *,
        return_semantic_probs: bool = False,
        return_query_masks: bool = False,
    ) -> Prediction:
        """One RGB image -> Prediction at its size (with `return_query_masks`, the unflipped
        view's binarised query masks, for `Prediction.instances("queries", ...)`)."""
        return self.predict_batch([image], return_semantic_probs=return_semantic_probs,
                                  return_query_masks=return_query_masks)[0]  # fmt: skip

    @torch.no_grad()
    def predict_batch(
        self,
        images: Sequence[np.ndarray | torch.Tensor | Image.Image],
        *,
        return_semantic_probs: bool = False,
        return_query_masks: bool = False,
    ) -> list[Prediction]:
        """Images of any sizes -> one Prediction each (views of equal size share forwards)."""
        arrays = [as_rgb_array(im, f"image {i}") for i, im in enumerate(images)]
        views = [(i, False) for i in range(len(arrays))]
        if self.inference.flip:
            views += [(i, True) for i in range(len(arrays))]
        with self.timer.stage("resize input"):
            inputs = {view: self._prepare(arrays[view[0]], flip=view[1]) for view in views}
        groups: dict[tuple[int, ...], list[tuple[int, bool]]] = {}
        for view, tensor in inputs.items():
            groups.setdefault(tuple(tensor.shape), []).append(view)
        results: dict[tuple[int, bool], ViewResult] = {}
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                output, padded = self._forward([inputs[v] for v in chunk])
                for j, view in enumerate(chunk):
                    results[view] = self._postprocess(
                        output.class_logits[j].float(),
                        output.mask_logits[j].float(),
                        padded,
                        inputs[view].shape[-2:],
                        arrays[view[0]].shape[:2],
                        keep_semantic=return_semantic_probs and not view[1],
                        keep_queries=return_query_masks and not view[1],
                    )
        with self.timer.stage("flip average"):
            return [self._combine(results, i, return_semantic_probs) for i in range(len(arrays))]

    def _forward(self, images: list[torch.Tensor]) -> tuple[ModelOutput, torch.Size]:
        """Normalise, pad and run the network on equal-size views."""
        with self.timer.stage("network"), self.timer.hooks(self.network):
            batch = self.network.preprocess(images)
            with (
                precision_context(self.inference.precision, self.device),
                compiled_sampling(self.inference.compile),
            ):
                output = self.network.infer(batch)
            release_memory()
            return output, batch.shape[-2:]

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
        keep_semantic: bool,
        keep_queries: bool = False,
    ) -> ViewResult:
        """One view's maps at the original size.

        Mask logits are upsampled to the padded input size, cropped to the input, and the
        evidence / refinement channels resized to the original size, as the official code does
        (in bands of rows: see the module docstring). Without resizing, each band is scored at
        once and the semantic probabilities are kept only when `keep_semantic`.
        """
        height, width = int(input_size[0]), int(input_size[1])
        size = (int(size[0]), int(size[1]))
        resized = size != (height, width)
        scoring = self.scoring
        indices, scores = refinement_queries(
            class_logits, scoring.refinement, scoring.refine_class_threshold
        )
        bands = ViewBands.allocate(
            class_logits, self.scores, (indices, scores), (height, width), resized, keep_semantic
        )
        with self.timer.stage("mask upsampling + semantic"):
            for top in range(0, height, ROW_BAND):
                bottom = min(top + ROW_BAND, height)
                probs = upsampled_rows(mask_logits, top, bottom, padded)[:, :, :width].sigmoid()
                bands.fill(top, bottom, probs, self.scores)
        semantic, labels, maps, refine_map = bands.semantic, bands.labels, bands.maps, None
        if resized:
            with self.timer.stage("resize back"):
                semantic = resize_maps(semantic, size)
                labels = semantic.max(0).indices
                extra = resize_maps(bands.extra, size) if len(bands.extras) else bands.extra
                maps = scores_in_bands(semantic, bands.extras, extra, self.scores)
                if len(indices):
                    resize = lambda maps: resize_maps(maps, size)  # noqa: E731
                    refine_map = refinement_map(torch.ones_like(scores), bands.kept, resize=resize)
        elif len(indices):
            refine_map = bands.kept
        with self.timer.stage("refinement"):
            keep = refine(class_logits.new_ones(size), refine_map, scoring.refine_mask_threshold)
        num_queries, num_classes = bands.class_probs.shape
        masks = query_masks(mask_logits, padded, (height, width), size) if keep_queries else None
        return ViewResult(
            maps, keep, labels.to(torch.uint8), semantic if keep_semantic else None,
            num_classes, num_queries, masks,
        )  # fmt: skip

    def _combine(
        self, results: dict[tuple[int, bool], ViewResult], index: int, return_semantic_probs: bool
    ) -> Prediction:
        """Average the unflipped view with the flipped one, flipped back (official TTA), each
        view refined first (`scoring.scores.refined`); the semantic map is the unflipped
        view's."""
        view = results[(index, False)]
        other = results[(index, True)] if self.inference.flip else None
        keep = view.keep
        maps: dict[str, torch.Tensor] = {}
        unrefined: dict[str, torch.Tensor] = {}
        for name in self.scores:
            score = view.maps[name]
            if other is None:
                unrefined[name] = score
                maps[name] = refined(name, score, view.keep)
            else:
                unrefined[name] = (score + other.maps[name].flip(-1)) / 2
                maps[name] = (
                    refined(name, score, view.keep)
                    + refined(name, other.maps[name], other.keep).flip(-1)
                ) / 2
        if other is not None:
            keep = (keep + other.keep.flip(-1)) / 2
        first = self.scores[0]
        maps_np = {name: value.cpu().numpy() for name, value in maps.items()}
        unrefined_np = {name: value.cpu().numpy() for name, value in unrefined.items()}
        return Prediction(
            anomaly_score=maps_np[first],
            anomaly_score_unrefined=unrefined_np[first],
            semantic=view.labels.cpu().numpy(),
            refinement_keep=keep.cpu().numpy(),
            semantic_probs=(
                view.semantic.cpu().numpy()
                if return_semantic_probs and view.semantic is not None
                else None
            ),
            maps=maps_np,
            maps_unrefined=unrefined_np,
            score=first,
            num_classes=int(view.num_classes),
            num_queries=int(view.num_queries),
            query_masks=None if view.query_masks is None else view.query_masks.cpu().numpy(),
        )

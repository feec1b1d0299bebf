"""One view's post-processing in bands of rows (Predictor): the upsampled mask probabilities
are never held for all queries at full size; each band of rows (bitwise the rows of the full
upsampling) is reduced at once to the evidence of the scores (`scoring/scores.py`), the labels
and the refinement channels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..scoring.scores import Evidence, extra_weights, extras_needed, reduce_scores

ROW_BAND = 64  # rows of the padded input whose mask probabilities are computed at once
SCORE_BAND = 256  # rows of resized-back evidence reduced to scores at once (bounds temporaries)
MASK_STRIDE = 4  # mask logits are at 1/4 of the padded input


class ViewResult(NamedTuple):
    """One view (image or its flip) at the original size: the unrefined map [H, W] of every
    score, refinement keep mask (1 kept, 0 refined), semantic labels [H, W] (train IDs),
    semantic probabilities [K, H, W] when asked for; the model's K and Q; the binarised query
    masks [Q, H, W] when asked for (`query_masks.py`)."""

    maps: dict[str, torch.Tensor]
    keep: torch.Tensor
    labels: torch.Tensor
    semantic: torch.Tensor | None
    num_classes: int
    num_queries: int
    query_masks: torch.Tensor | None = None


@dataclass
class ViewBands:
    """The buffers one view's row bands fill (Predictor._postprocess): the semantic
    probabilities [K, h, w] (when resized back or asked for), extra evidence [E, h, w] (when
    resized back), the scores and labels [h, w] (when not resized back), and the refinement
    channels: kept [M, h, w] before resizing back, else their max [h, w]."""

    class_probs: torch.Tensor  # [Q, K]
    weights: torch.Tensor | None  # [Q, E] weights of the extra evidence
    extras: tuple[str, ...]
    refine_scores: torch.Tensor  # [M] scores of the refinement queries
    refine_indices: torch.Tensor  # [M]
    resized: bool
    full: bool
    semantic: torch.Tensor
    extra: torch.Tensor
    maps: dict[str, torch.Tensor]
    labels: torch.Tensor
    kept: torch.Tensor

    @classmethod
    def allocate(
        cls,
        class_logits: torch.Tensor,
        names: Sequence[str],
        refinement: tuple[torch.Tensor, torch.Tensor],
        shape: tuple[int, int],
        resized: bool,
        keep_semantic: bool,
    ) -> ViewBands:
        probabilities = class_logits.softmax(-1)
        class_probs = probabilities[:, :-1]
        extras = extras_needed(names)
        weights = extra_weights(probabilities, extras) if extras else None
        indices, scores = refinement
        full = resized or keep_semantic
        new = class_logits.new_empty
        return cls(
            class_probs, weights, extras, scores, indices, resized, full,
            semantic=new((class_probs.shape[1], *shape) if full else (0,)),
            extra=new((len(extras), *shape) if resized else (0,)),
            maps={name: new(shape) for name in names},
            labels=torch.empty(shape, dtype=torch.uint8, device=class_logits.device),
            kept=new(((len(indices), *shape) if resized else shape) if len(indices) else (0,)),
        )  # fmt: skip

    def fill(self, top: int, bottom: int, probs: torch.Tensor, names: Sequence[str]) -> None:
        """Rows [top, bottom) from their mask probabilities [Q, bottom - top, w]."""
        band = torch.einsum("qk,qhw->khw", self.class_probs, probs)
        band_extra = None
        if self.weights is not None:
            band_extra = torch.einsum("qe,qhw->ehw", self.weights, probs)
        if self.full:
            self.semantic[:, top:bottom] = band
        if not self.resized:
            self.labels[top:bottom] = band.max(0).indices
            for name, value in reduce_scores(
                evidence_of(band, self.extras, band_extra), names
            ).items():
                self.maps[name][top:bottom] = value
        elif band_extra is not None:
            self.extra[:, top:bottom] = band_extra
        if len(self.refine_indices):
            channels = self.refine_scores[:, None, None] * probs[self.refine_indices]
            self.kept[..., top:bottom, :] = channels if self.resized else channels.amax(0)


def evidence_of(
    semantic: torch.Tensor, extras: tuple[str, ...], extra: torch.Tensor | None
) -> Evidence:
    found = dict(zip(extras, extra, strict=True)) if extra is not None else {}
    return Evidence(semantic, found.get("void"), found.get("inlier"))


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, h, w] -> [C, H, W] bilinear (align_corners=False), unless already that size."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def upsampled_rows(
    mask_logits: torch.Tensor, top: int, bottom: int, padded: torch.Size | tuple[int, int]
) -> torch.Tensor:
    """Rows [top, bottom) of `F.interpolate(mask_logits, size=padded, mode="bilinear")`
    ([Q, bottom - top, W_padded]), bitwise: the band's source rows with one row of margin on
    each side are upsampled by the same exact factor, so every kept row sees the same source
    rows and weights as in the full upsampling."""
    rows = mask_logits.shape[-2]
    first = max(0, top // MASK_STRIDE - 1)
    last = min(rows, (bottom - 1) // MASK_STRIDE + 2)
    band = F.interpolate(
        mask_logits[None, :, first:last],
        size=((last - first) * MASK_STRIDE, int(padded[1])),
        mode="bilinear",
        align_corners=False,
    )[0]
    offset = first * MASK_STRIDE
    return band[:, top - offset : bottom - offset]


def scores_in_bands(
    semantic: torch.Tensor, extras: tuple[str, ...], extra: torch.Tensor, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Every score [H, W] of resized-back evidence, SCORE_BAND rows at a time."""
    height, width = semantic.shape[-2:]
    maps = {name: semantic.new_empty(height, width) for name in names}
    for top in range(0, height, SCORE_BAND):
        rows = slice(top, top + SCORE_BAND)
        band_extra = extra[:, rows] if len(extras) else None
        ev = evidence_of(semantic[:, rows], extras, band_extra)
        for name, value in reduce_scores(ev, names).items():
            maps[name][rows] = value
    return maps

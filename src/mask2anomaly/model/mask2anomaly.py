"""The Mask2Anomaly network: ResNet -> deformable pixel decoder -> query decoder (paper Fig. 2).

`Mask2Anomaly.preprocess` normalises RGB images (0..255) and pads them to a multiple of 32 (zero
after normalisation, as detectron2's ImageList); `forward` returns the class and mask logits of the
final prediction plus the earlier ones for deep supervision. `build_model` is the one place that
reads a ModelConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .backbone import ResNet
from .pixel_decoder import PixelDecoder
from .transformer_decoder import TransformerDecoder


@dataclass(frozen=True)
class ModelOutput:
    """class_logits [B, Q, K+1], mask_logits [B, Q, H/4, W/4] of the last decoder layer;
    aux: the earlier predictions (learnable queries, then layers 1..L-1), same shapes."""

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    aux: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class Mask2Anomaly(nn.Module):
    def __init__(
        self,
        *,
        backbone: ResNet,
        pixel_decoder: PixelDecoder,
        decoder: TransformerDecoder,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.size_divisibility = size_divisibility
        self.pixel_mean: torch.Tensor
        self.pixel_std: torch.Tensor
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.decoder.class_embed.out_features - 1

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """RGB images [3, H_i, W_i] (0..255, any dtype) -> normalised batch [B, 3, H, W] padded
        with zeros to the largest size rounded up to a multiple of `size_divisibility`."""
        d = self.size_divisibility
        height = max(im.shape[-2] for im in images)
        width = max(im.shape[-1] for im in images)
        height, width = -(-height // d) * d, -(-width // d) * d
        batch = self.pixel_mean.new_zeros(len(images), 3, height, width)
        for i, image in enumerate(images):
            normalised = (image.to(batch) - self.pixel_mean) / self.pixel_std
            batch[i, :, : image.shape[-2], : image.shape[-1]] = normalised
        return batch

    def forward(self, images: torch.Tensor) -> ModelOutput:
        """images: normalised [B, 3, H, W] with H, W multiples of 32 (see `preprocess`)."""
        features = self.backbone(images)
        mask_features, multi_scale = self.pixel_decoder(features)
        predictions = self.decoder(multi_scale, mask_features)
        class_logits, mask_logits = predictions[-1]
        return ModelOutput(class_logits, mask_logits, tuple(predictions[:-1]))

    def infer(self, images: torch.Tensor) -> ModelOutput:
        """The final prediction only (aux empty), for inference: the decoder frees each
        intermediate mask prediction as soon as its attention masks are made."""
        mask_features, multi_scale = self.pixel_decoder(self.backbone(images))
        predictions = self.decoder(multi_scale, mask_features, keep_intermediate=False)
        class_logits, mask_logits = predictions[-1]
        return ModelOutput(class_logits, mask_logits, ())


def build_model(cfg: ModelConfig) -> Mask2Anomaly:
    """Wire the three parts of the network from a ModelConfig."""
    backbone = ResNet(
        depth=cfg.backbone.depth, base_width=cfg.backbone.base_width, freeze=cfg.backbone.freeze
    )
    pd = cfg.pixel_decoder
    pixel_decoder = PixelDecoder(
        in_channels=backbone.channels,
        conv_dim=pd.conv_dim,
        mask_dim=pd.mask_dim,
        num_encoder_layers=pd.num_encoder_layers,
        encoder_ffn_dim=pd.encoder_ffn_dim,
        num_heads=pd.num_heads,
        num_points=pd.num_points,
        num_groups=pd.num_groups,
        dropout=pd.dropout,
    )
    dc = cfg.decoder
    decoder = TransformerDecoder(
        in_channels=pd.conv_dim,
        hidden_dim=dc.hidden_dim,
        num_queries=dc.num_queries,
        num_heads=dc.num_heads,
        num_layers=dc.num_layers,
        ffn_dim=dc.ffn_dim,
        mask_dim=pd.mask_dim,
        num_classes=cfg.num_classes,
        cross_attention=dc.cross_attention,
        dropout=dc.dropout,
    )
    return Mask2Anomaly(
        backbone=backbone,
        pixel_decoder=pixel_decoder,
        decoder=decoder,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
        size_divisibility=cfg.size_divisibility,
    )

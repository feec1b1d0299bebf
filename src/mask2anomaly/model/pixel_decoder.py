"""Multi-scale deformable-attention pixel decoder (Mask2Former's MSDeformAttnPixelDecoder).

A deformable transformer encoder runs over res5, res4, res3 (strides 32, 16, 8); one FPN level
adds res2 at stride 4, from which the per-pixel mask features are projected (spec
official-implementation.md §4.1). All of it runs in float32 (outside autocast), as the official
code does, or in the dtype of its own weights when the whole network is converted (bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ConvNorm
from .deformable_attention import MSDeformAttn
from .position_encoding import position_encoding_like

TOKEN_CHUNK = 8192  # tokens through an encoder layer at once in inference


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention -> add & norm -> FFN -> add & norm."""

    def __init__(
        self,
        *,
        dim: int,
        ffn_dim: int,
        num_levels: int,
        num_heads: int,
        num_points: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(
            dim=dim, num_levels=num_levels, num_heads=num_heads, num_points=num_points
        )
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """src, pos: [B, S, C] all levels flattened; reference_points [B, S, L, 2]."""
        if not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export():
            return self._forward_in_chunks(src, pos, reference_points, spatial_shapes)
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes)
        return self._after_attention(src, attended)

    def _after_attention(self, src: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        src = self.norm1(src + self.dropout(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(src + self.dropout(ffn))

    def _forward_in_chunks(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """Inference: every token's value in one table, then everything after it (attention,
        norms, FFN: all per token) for chunks of tokens — the rows of `forward` (up to the
        rounding of differently shaped matrix products), with small temporaries."""
        table = self.self_attn.table(src, spatial_shapes)
        out = torch.empty_like(src)
        for start in range(0, src.shape[1], TOKEN_CHUNK):
            part = slice(start, start + TOKEN_CHUNK)
            query = src[:, part] + pos[:, part]
            attended = self.self_attn.attend(
                query, reference_points[:, part], table, spatial_shapes
            )
            out[:, part] = self._after_attention(src[:, part], attended)
        return out


def encoder_reference_points(
    spatial_shapes: list[tuple[int, int]], num_levels: int, device: torch.device
) -> torch.Tensor:
    """Pixel centres ((j + 0.5) / w, (i + 0.5) / h) of every level: [1, S, L, 2] (no padding)."""
    points = []
    for h, w in spatial_shapes:
        # arange + 0.5 equals linspace(0.5, h - 0.5, h) exactly and exports with dynamic sizes
        ref_y, ref_x = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=device) + 0.5,
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    return torch.cat(points, 0)[None, :, None, :].expand(-1, -1, num_levels, -1)


class DeformableEncoder(nn.Module):
    """Stack of deformable encoder layers over L flattened levels with a level embedding."""

    def __init__(
        self,
        *,
        dim: int,
        ffn_dim: int,
        num_layers: int,
        num_levels: int,
        num_heads: int,
        num_points: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(num_levels, dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(
                dim=dim,
                ffn_dim=ffn_dim,
                num_levels=num_levels,
                num_heads=num_heads,
                num_points=num_points,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            assert isinstance(layer, DeformableEncoderLayer)
            layer.self_attn.reset_parameters()

    def forward(self, srcs: list[torch.Tensor], pos: list[torch.Tensor]) -> list[torch.Tensor]:
        """srcs, pos: per level [B, C, h_l, w_l] -> encoded maps, same shapes and order."""
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # [B, S, C]
        lvl_pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                for i, p in enumerate(pos)
            ],
            1,
        )
        reference_points = encoder_reference_points(shapes, len(srcs), src.device)
        for layer in self.layers:
            src = layer(src, lvl_pos, reference_points, shapes)
        out = src.split([h * w for h, w in shapes], dim=1)
        return [o.transpose(1, 2).reshape(o.shape[0], -1, h, w) for o, (h, w) in zip(out, shapes)]


def _conv_gn(in_channels: int, out_channels: int, kernel_size: int, num_groups: int) -> ConvNorm:
    """Bias-free conv + GroupNorm (detectron2's Conv2d(norm="GN")), c2_xavier_fill init."""
    conv = ConvNorm(
        in_channels, out_channels, kernel_size, norm=nn.GroupNorm(num_groups, out_channels)
    )
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return conv


class PixelDecoder(nn.Module):
    """Deformable encoder on res3-res5 + FPN to stride 4.

    Args:
        in_channels: channels of res2, res3, res4, res5 (backbone outputs).
        conv_dim: transformer width; mask_dim: channels of the mask features.
    """

    def __init__(
        self,
        *,
        in_channels: dict[str, int],
        conv_dim: int,
        mask_dim: int,
        num_encoder_layers: int,
        encoder_ffn_dim: int,
        num_heads: int,
        num_points: int,
        num_groups: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        self.encoder_features = ("res5", "res4", "res3")  # low -> high resolution
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels[name], conv_dim, 1), nn.GroupNorm(num_groups, conv_dim)
            )
            for name in self.encoder_features
        )
        for proj in self.input_proj:
            conv = proj[0]  # type: ignore[index]
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.constant_(conv.bias, 0)
        self.encoder = DeformableEncoder(
            dim=conv_dim,
            ffn_dim=encoder_ffn_dim,
            num_layers=num_encoder_layers,
            num_levels=len(self.encoder_features),
            num_heads=num_heads,
            num_points=num_points,
            dropout=dropout,
        )
        self.lateral_conv = _conv_gn(in_channels["res2"], conv_dim, 1, num_groups)
        self.output_conv = _conv_gn(conv_dim, conv_dim, 3, num_groups)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)  # type: ignore[arg-type]

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Backbone features -> (mask features [B, mask_dim, H/4, W/4],
        multi-scale maps [B, conv_dim, h, w] at strides 32, 16, 8). Consumes `features`: each
        entry is dropped from the dict once used, so that its memory is freed early."""
        dtype = self.mask_features.weight.dtype  # float32, or the network's own (bf16 copy)
        with torch.autocast(device_type=features["res5"].device.type, enabled=False):
            srcs, pos = [], []
            for proj, name in zip(self.input_proj, self.encoder_features):
                x = features.pop(name).to(dtype)
                srcs.append(proj(x))
                pos.append(position_encoding_like(x, self.conv_dim))
            del x
            multi_scale = self.encoder(srcs, pos)
            del srcs, pos
            lateral = self.lateral_conv(features.pop("res2").to(dtype))
            # A copy with the canonical NHWC strides: the encoder's map is NHWC in memory but
            # its batch stride sends the resize down its slow path (8x slower). The NHWC
            # resize and its backward give exactly the NCHW values and gradients (tested).
            top = multi_scale[-1].clone(memory_format=torch.channels_last)
            lateral += F.interpolate(  # in place: one stride-4 map fewer alive
                top, size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            fpn = F.relu(self.output_conv(lateral), inplace=True)
            del lateral
            # NCHW for the decoder's mask products (the convolutions may have run in NHWC)
            return self._mask_features_nchw(fpn), multi_scale

    def _mask_features_nchw(self, fpn: torch.Tensor) -> torch.Tensor:
        """The 1x1 mask-feature convolution with an NCHW result. On an NHWC map it is one
        matrix product W @ X^T per image, which writes NCHW directly: the same numbers as the
        convolution followed by an NHWC -> NCHW copy, in a third of the time."""
        conv = self.mask_features
        if fpn.dtype == torch.float32 or not fpn.is_contiguous(memory_format=torch.channels_last):
            return conv(fpn).contiguous()
        batch, channels, height, width = fpn.shape
        weight, bias = conv.weight.view(conv.out_channels, channels), conv.bias
        assert bias is not None
        images = [torch.addmm(bias[:, None], weight, x) for x in fpn.flatten(2)]
        out = images[0].unsqueeze(0) if batch == 1 else torch.stack(images)
        return out.view(batch, conv.out_channels, height, width)

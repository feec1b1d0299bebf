"""Query decoder with global masked attention (paper §3.2, Eq. 4; spec §4.2).

Each of the layers runs cross-attention -> self-attention -> FFN, post-norm, over the multi-scale
features cycling 1/32 -> 1/16 -> 1/8. A prediction head (class logits, mask logits) runs on the
learnable queries and after every layer; each prediction supplies the attention masks of the next
layer. Cross-attention variants (paper Table 3c):

* ``global``: two attention branches with their own projections, one restricted to the predicted
  foreground (sigmoid < 0.5 blocked), one to the background (sigmoid > 0.5 blocked); their outputs
  are summed before one residual + LayerNorm (the official GlobalCrossAttentionLayer).
* ``masked``: Mask2Former's masked attention (foreground branch only).
* ``cross``: plain cross-attention, no mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CrossAttention, choices
from .position_encoding import position_encoding_like

NUM_FEATURE_LEVELS = 3


def unblock_full_rows(mask: torch.Tensor) -> torch.Tensor:
    """Rows of a boolean attention mask [B*heads, Q, S] that block every key attend everywhere."""
    full = mask.all(dim=-1, keepdim=True)
    return mask & ~full


class CrossAttentionLayer(nn.Module):
    """Queries attend to image features; masked per branch (see module docstring)."""

    def __init__(
        self, *, dim: int, num_heads: int, variant: CrossAttention, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if variant not in choices(CrossAttention):
            raise ValueError(f"cross_attention must be global, masked or cross, got {variant!r}")
        self.variant = variant
        if variant == "global":
            self.multihead_attn_foreground = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
            self.multihead_attn_background = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        else:
            self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        foreground_mask: torch.Tensor | None,
        background_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """tgt [Q, B, C], memory and pos [S, B, C]; masks [B*heads, Q, S], True = blocked."""
        query, key = tgt + query_pos, memory + pos
        if self.variant == "global":
            fg = self.multihead_attn_foreground(
                query, key, memory, attn_mask=foreground_mask, need_weights=False
            )[0]
            bg = self.multihead_attn_background(
                query, key, memory, attn_mask=background_mask, need_weights=False
            )[0]
            attended = fg + bg
        else:
            mask = foreground_mask if self.variant == "masked" else None
            attended = self.multihead_attn(query, key, memory, attn_mask=mask, need_weights=False)[
                0
            ]
        return self.norm(tgt + self.dropout(attended))


class SelfAttentionLayer(nn.Module):
    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, *, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, tgt, need_weights=False)[0]
        return self.norm(tgt + self.dropout(attended))


class FFNLayer(nn.Module):
    def __init__(self, *, dim: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        out = self.linear2(self.dropout(F.relu(self.linear1(tgt), inplace=True)))
        return self.norm(tgt + self.dropout(out))


class MLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x), inplace=True)
        return x


class TransformerDecoder(nn.Module):
    """Mask2Former query decoder with selectable cross-attention.

    Args:
        in_channels: channels of the multi-scale features (== hidden_dim: no input projection).
        num_classes: K inlier classes; class logits have K + 1 entries (last = no object).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        hidden_dim: int,
        num_queries: int,
        num_heads: int,
        num_layers: int,
        ffn_dim: int,
        mask_dim: int,
        num_classes: int,
        cross_attention: CrossAttention = "global",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels != hidden_dim:
            raise ValueError(
                "in_channels must equal hidden_dim (the official decoder has no "
                f"input projection), got {in_channels} and {hidden_dim}"
            )
        self.num_heads, self.num_layers = num_heads, num_layers
        self.cross_attention = cross_attention
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim=hidden_dim, num_heads=num_heads, dropout=dropout)
            for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(
                dim=hidden_dim, num_heads=num_heads, variant=cross_attention, dropout=dropout
            )
            for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim=hidden_dim, ffn_dim=ffn_dim, dropout=dropout) for _ in range(num_layers)
        )
        for layers in (
            self.transformer_self_attention_layers,
            self.transformer_cross_attention_layers,
            self.transformer_ffn_layers,
        ):
            for p in layers.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(NUM_FEATURE_LEVELS, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(
            in_dim=hidden_dim, hidden_dim=hidden_dim, out_dim=mask_dim, num_layers=3
        )

    def forward(
        self,
        multi_scale: list[torch.Tensor],
        mask_features: torch.Tensor,
        *,
        keep_intermediate: bool = True,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """multi_scale: maps at strides 32, 16, 8 [B, C, h_l, w_l]; mask_features [B, D, H/4, W/4].

        Returns the num_layers + 1 predictions (class_logits [B, Q, K+1], mask_logits
        [B, Q, H/4, W/4]): from the learnable queries, then after each layer; only the last
        one without `keep_intermediate` (inference: each full-size mask is freed once its
        attention masks are made).
        """
        srcs, pos, sizes = self._memory(multi_scale)
        batch = mask_features.shape[0]
        mask_features = mask_features.contiguous()  # one copy, not one per prediction (NHWC)
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)  # [Q, B, C]
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        class_logits, mask_logits = self.predict(output, mask_features)
        predictions = [(class_logits, mask_logits)]
        for i in range(self.num_layers):
            level = i % len(multi_scale)
            attention_logits = F.interpolate(
                mask_logits, size=sizes[level], mode="bilinear", align_corners=False
            )
            fg_mask, bg_mask = self.attention_masks(attention_logits, shared=True)
            output = self.transformer_cross_attention_layers[i](
                output,
                srcs[level],
                pos=pos[level],
                query_pos=query_pos,
                foreground_mask=fg_mask,
                background_mask=bg_mask,
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            class_logits, mask_logits = self.predict(output, mask_features)
            if keep_intermediate or i == self.num_layers - 1:
                predictions.append((class_logits, mask_logits))
        return predictions if keep_intermediate else predictions[-1:]

    def _memory(
        self, multi_scale: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Size]]:
        """Per level: the flattened features with their level embedding [S, B, C], their
        position encoding [S, B, C], and the map size."""
        srcs, pos, sizes = [], [], []
        for i, x in enumerate(multi_scale):
            sizes.append(x.shape[-2:])
            pos.append(position_encoding_like(x, x.shape[1]).flatten(2).permute(2, 0, 1))
            src = x.flatten(2) + self.level_embed.weight[i][None, :, None]
            srcs.append(src.permute(2, 0, 1))  # [S, B, C]
        return srcs, pos, sizes

    def predict(
        self, output: torch.Tensor, mask_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared prediction head: queries [Q, B, C] -> class and mask logits."""
        decoded = self.decoder_norm(output).transpose(0, 1)  # [B, Q, C]
        class_logits = self.class_embed(decoded)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        return class_logits, mask_logits

    def attention_masks(
        self, mask_logits: torch.Tensor, *, shared: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Foreground / background masks [B*heads, Q, h*w] (True = blocked) from mask logits
        [B, Q, h, w] at the attended level's size; with `shared` and one image, [Q, h*w] for
        every head at once (8x less to build and convert).

        The foreground branch sees sigmoid >= 0.5, the background branch sigmoid <= 0.5; a row
        that would block everything is unblocked (the official rule), separately per mask.
        """
        if self.cross_attention == "cross":
            return None, None
        probs = mask_logits.sigmoid().flatten(2).detach()  # [B, Q, S]

        def per_head(mask: torch.Tensor) -> torch.Tensor:  # [B*heads, Q, S], batch-major
            mask = unblock_full_rows(mask)
            if shared and mask.shape[0] == 1:  # one [Q, S] mask that attention broadcasts
                return mask[0]
            return mask.repeat_interleave(self.num_heads, dim=0)

        if self.cross_attention == "masked":
            return per_head(probs < 0.5), None
        return per_head(probs < 0.5), per_head(probs > 0.5)

"""Global masked attention, the blocked-row rule and the decoder's prediction layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mask2anomaly.model import build_model
from mask2anomaly.model.transformer_decoder import (
    CrossAttentionLayer,
    TransformerDecoder,
    unblock_full_rows,
)


def explicit_attention(mha: torch.nn.MultiheadAttention, query, key, value, mask):
    """Multi-head attention written out: [L, B, C] inputs, mask [B*heads, L, S] True = blocked."""
    heads, dim = mha.num_heads, mha.embed_dim
    head_dim = dim // heads
    w_q, w_k, w_v = mha.in_proj_weight.split(dim)
    b_q, b_k, b_v = mha.in_proj_bias.split(dim)
    q, k, v = query @ w_q.T + b_q, key @ w_k.T + b_k, value @ w_v.T + b_v
    length, batch, _ = q.shape

    def split(x):  # [L, B, C] -> [B, heads, L, head_dim]
        return x.view(x.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3)

    scores = split(q) @ split(k).transpose(-1, -2) / head_dim**0.5
    if mask is not None:
        scores = scores.masked_fill(mask.view(batch, heads, length, -1), float("-inf"))
    out = scores.softmax(-1) @ split(v)  # [B, heads, L, head_dim]
    out = out.permute(2, 0, 1, 3).reshape(length, batch, dim)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def random_inputs(queries=5, pixels=12, batch=2, dim=16, heads=4):
    torch.manual_seed(0)
    tgt, query_pos = torch.randn(queries, batch, dim), torch.randn(queries, batch, dim)
    memory, pos = torch.randn(pixels, batch, dim), torch.randn(pixels, batch, dim)
    probs = torch.rand(batch * heads, queries, pixels)
    fg = unblock_full_rows(probs < 0.5)
    bg = unblock_full_rows(probs > 0.5)
    return tgt, query_pos, memory, pos, fg, bg


def test_global_attention_equals_explicit_two_branches():
    tgt, query_pos, memory, pos, fg, bg = random_inputs()
    layer = CrossAttentionLayer(dim=16, num_heads=4, variant="global").eval()
    torch.nn.init.normal_(layer.norm.weight)
    out = layer(tgt, memory, pos=pos, query_pos=query_pos, foreground_mask=fg, background_mask=bg)
    q, k = tgt + query_pos, memory + pos
    branches = explicit_attention(layer.multihead_attn_foreground, q, k, memory, fg)
    branches = branches + explicit_attention(layer.multihead_attn_background, q, k, memory, bg)
    expected = F.layer_norm(tgt + branches, (16,), layer.norm.weight, layer.norm.bias)
    assert torch.allclose(out, expected, atol=1e-5)


def test_global_attention_reduces_to_masked_when_background_output_is_zero():
    tgt, query_pos, memory, pos, fg, bg = random_inputs()
    gma = CrossAttentionLayer(dim=16, num_heads=4, variant="global").eval()
    with torch.no_grad():
        gma.multihead_attn_background.out_proj.weight.zero_()
        gma.multihead_attn_background.out_proj.bias.zero_()
    masked = CrossAttentionLayer(dim=16, num_heads=4, variant="masked").eval()
    masked.multihead_attn.load_state_dict(gma.multihead_attn_foreground.state_dict())
    masked.norm.load_state_dict(gma.norm.state_dict())
    kwargs = dict(pos=pos, query_pos=query_pos, foreground_mask=fg, background_mask=bg)
    assert torch.allclose(gma(tgt, memory, **kwargs), masked(tgt, memory, **kwargs), atol=1e-6)


def test_masked_and_cross_variants():
    tgt, query_pos, memory, pos, fg, bg = random_inputs()
    layer = CrossAttentionLayer(dim=16, num_heads=4, variant="masked").eval()
    kwargs = dict(pos=pos, query_pos=query_pos, background_mask=bg)
    q, k = tgt + query_pos, memory + pos
    expected = F.layer_norm(
        tgt + explicit_attention(layer.multihead_attn, q, k, memory, fg),
        (16,),
        layer.norm.weight,
        layer.norm.bias,
    )
    assert torch.allclose(layer(tgt, memory, foreground_mask=fg, **kwargs), expected, atol=1e-5)
    layer.variant = "cross"  # same weights, the mask is ignored
    expected = F.layer_norm(
        tgt + explicit_attention(layer.multihead_attn, q, k, memory, None),
        (16,),
        layer.norm.weight,
        layer.norm.bias,
    )
    assert torch.allclose(layer(tgt, memory, foreground_mask=fg, **kwargs), expected, atol=1e-5)


def test_fully_blocked_rows_are_unblocked():
    mask = torch.tensor([[[True, True, True], [True, False, True], [False, False, False]]])
    expected = torch.tensor([[[False, False, False], [True, False, True], [False, False, False]]])
    assert torch.equal(unblock_full_rows(mask), expected)


def test_attention_masks_per_branch():
    decoder = TransformerDecoder(
        in_channels=8,
        hidden_dim=8,
        num_queries=3,
        num_heads=2,
        num_layers=1,
        ffn_dim=16,
        mask_dim=8,
        num_classes=2,
    )
    logits = torch.tensor([[[-5.0, -4.0], [3.0, 2.0], [-1.0, 0.0]]])[:, :, None, :]  # [1, 3, 1, 2]
    fg, bg = decoder.attention_masks(logits)  # logits at the attended size (1, 2)
    assert fg.shape == (2, 3, 2)  # [B * heads, Q, S]
    # query 0: nothing in the foreground -> row unblocked; background sees everything anyway
    assert not fg[0, 0].any() and not bg[0, 0].any()
    # query 1: everything foreground -> background row fully blocked -> unblocked
    assert not fg[0, 1].any() and not bg[0, 1].any()
    # query 2: sigmoid(-1) < 0.5 blocked for the foreground; sigmoid(0) = 0.5 visible to both
    assert fg[0, 2].tolist() == [True, False] and bg[0, 2].tolist() == [False, False]
    assert torch.equal(fg[0], fg[1])  # repeated over heads


def test_decoder_returns_one_prediction_per_layer_plus_queries():
    torch.manual_seed(0)
    decoder = TransformerDecoder(
        in_channels=16,
        hidden_dim=16,
        num_queries=4,
        num_heads=2,
        num_layers=4,
        ffn_dim=32,
        mask_dim=8,
        num_classes=3,
    ).eval()
    multi_scale = [torch.randn(2, 16, 2, 3), torch.randn(2, 16, 4, 6), torch.randn(2, 16, 8, 12)]
    mask_features = torch.randn(2, 8, 16, 24)
    predictions = decoder(multi_scale, mask_features)
    assert len(predictions) == 5
    for class_logits, mask_logits in predictions:
        assert class_logits.shape == (2, 4, 4) and mask_logits.shape == (2, 4, 16, 24)
    # each image is decoded independently of the others in the batch
    single = decoder([x[1:] for x in multi_scale], mask_features[1:])
    assert torch.allclose(single[-1][1][0], predictions[-1][1][1], atol=1e-5)


def test_infer_is_the_last_prediction_and_low_res_masks_are_close(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config.model).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        full = model(images)
        final = model.infer(images)
        assert final.aux == ()
        assert torch.equal(final.class_logits, full.class_logits)
        assert torch.equal(final.mask_logits, full.mask_logits)
        # outside float32, infer resizes the mask features instead of the mask logits for the
        # attention masks (the resize commutes with the linear mask head): float64 shows it
        model.double()
        exact, low_res = model(images.double()), model.infer(images.double())
    assert torch.allclose(low_res.mask_logits, exact.mask_logits, atol=1e-9)
    assert torch.allclose(low_res.class_logits, exact.class_logits, atol=1e-9)

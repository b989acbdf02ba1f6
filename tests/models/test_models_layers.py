"""The fused attention of the UNet and ViT blocks against a plain softmax reference; resampling shapes."""

import pytest
import torch
import torch.nn.functional as F

from gaussquant.models.layers import (
    AttnBlock,
    Downsample,
    ResnetBlock,
    SelfAttention,
    Upsample,
    group_norm,
    reference_attention,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_attn_block_matches_plain_softmax_reference():
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 5, 6, generator=_gen())
    y = block.norm(x)
    b, c, h, w = x.shape
    q, k, v = (t.reshape(b, c, h * w).transpose(1, 2) for t in (block.q(y), block.k(y), block.v(y)))
    ref = reference_attention(q, k, v).transpose(1, 2).reshape(b, c, h, w)
    expected = x + block.proj_out(ref)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_multihead_self_attention_matches_reference():
    torch.manual_seed(0)
    attn = SelfAttention(32, heads=4).eval()
    x = torch.randn(3, 7, 32, generator=_gen(1))
    qkv = attn.qkv(x).reshape(3, 7, 3, 4, 8)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, heads, L, 8)
    ref = reference_attention(q, k, v).transpose(1, 2).reshape(3, 7, 32)
    torch.testing.assert_close(attn(x), attn.proj(ref), rtol=1e-5, atol=1e-5)


def test_resnet_block_shortcut_and_resampling_shapes():
    x = torch.randn(1, 32, 8, 6, generator=_gen())
    assert ResnetBlock(32, 64)(x).shape == (1, 64, 8, 6)
    assert ResnetBlock(32, 32).nin_shortcut is None
    assert Downsample(32)(x).shape == (1, 32, 4, 3)
    assert Upsample(32)(x).shape == (1, 32, 16, 12)


def test_group_norm_needs_divisible_channels():
    assert isinstance(group_norm(64), torch.nn.GroupNorm)
    with pytest.raises(ValueError, match="divisible by 32"):
        group_norm(48)


def test_reference_attention_is_sdpa():
    g = _gen(3)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v), reference_attention(q, k, v))

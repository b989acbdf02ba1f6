"""UNet / ViT: the paper presets equal the reference's state dicts one for one; paper parameter counts.

The paper presets are built on the meta device only (shapes, no memory). The fixture is the GQ reference's
encoder / decoder state dict shapes; inside an Autoencoder the same keys carry the prefixes ``encoder.``
and ``decoder.`` (the reference's LightningModule uses the same two prefixes).
"""

import json
import math
from pathlib import Path

import pytest
import torch

from gaussquant.models.presets import ARCH_PRESETS, ModelConfig, build_encoder_decoder
from gaussquant.models.unet import UNetDecoder, UNetEncoder
from gaussquant.models.vit import ViTDecoder, ViTEncoder, clamp_straight_through

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_unet_paper_state_dict_shapes.json"
VIT_FIXTURE = FIXTURE.with_name("reference_vit_paper_state_dict_shapes.json")


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _paper(arch: str, z: int = 16):
    cfg = ModelConfig(arch=arch, image_size=256)
    with torch.device("meta"):
        return build_encoder_decoder(cfg, 2 * z, z)


def test_unet_paper_keys_and_shapes_equal_reference_fixture():
    reference = json.loads(FIXTURE.read_text())
    encoder, decoder = _paper("unet-paper")
    assert _shapes(encoder) == reference["encoder"]
    assert _shapes(decoder) == reference["decoder"]
    # same order too, so a positional dump lines up
    assert list(_shapes(encoder)) == list(reference["encoder"])
    assert list(_shapes(decoder)) == list(reference["decoder"])


def test_vit_paper_keys_and_shapes_equal_reference_fixture():
    reference = json.loads(VIT_FIXTURE.read_text())
    encoder, decoder = _paper("vit-paper")
    assert _shapes(encoder) == reference["encoder"]
    assert _shapes(decoder) == reference["decoder"]
    assert list(_shapes(encoder)) == list(reference["encoder"])
    assert list(_shapes(decoder)) == list(reference["decoder"])
    assert "conv1.bias" not in reference["encoder"] and "ln_pre.weight" in reference["decoder"]


def test_unet_paper_direct_constructor_matches_preset():
    kw = dict(base_channels=128, channel_mults=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[32], resolution=256)
    with torch.device("meta"):
        enc, dec = UNetEncoder(out_channels=32, **kw), UNetDecoder(in_channels=16, **kw)
    preset_enc, preset_dec = _paper("unet-paper")
    assert _shapes(enc) == _shapes(preset_enc) and _shapes(dec) == _shapes(preset_dec)


def test_paper_parameter_counts():
    """The UNet's parameter counts equal those of the reference's state dict (the fixture's shapes), counted
    over parameters only (so a tensor registered as a buffer instead of a parameter, e.g. a frozen norm,
    is caught as well as any changed width, block count or bias).

    The literals are the fixture's totals (35.3M encoder + 51.6M decoder, as in its README), asserted too so
    that an edited fixture is caught.
    """
    reference = json.loads(FIXTURE.read_text())
    expected = {part: sum(math.prod(shape) for shape in reference[part].values()) for part in ("encoder", "decoder")}
    assert expected == {"encoder": 35_325_856, "decoder": 51_648_771}
    enc, dec = _paper("unet-paper")
    assert _count(enc) == expected["encoder"]
    assert _count(dec) == expected["decoder"]
    enc, dec = _paper("vit-paper")
    assert _count(enc) == 86_016_032  # 86.0M, the reference's (fixture)
    assert _count(dec) == 88_809_408  # 88.8M


@pytest.mark.parametrize("arch", ["unet-paper", "vit-paper"])
def test_paper_presets_shapes_on_meta(arch):
    enc, dec = _paper(arch)
    x = torch.empty(2, 3, 256, 256, device="meta")
    h = enc(x)
    expected = (2, 32, 32, 32) if arch.startswith("unet") else (2, 1024, 32)
    assert tuple(h.shape) == expected
    z = torch.empty(*expected[:-1], 16, device="meta") if arch.startswith("vit") else torch.empty(2, 16, 32, 32, device="meta")
    assert tuple(dec(z).shape) == (2, 3, 256, 256)


def test_sd_family_mid_attention_option_adds_attn_1():
    kw = dict(base_channels=32, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[], resolution=16)
    with torch.device("meta"):
        enc = UNetEncoder(out_channels=8, mid_attention=True, **kw)
    assert "mid.attn_1.q.weight" in enc.state_dict()


def test_unet_runs_at_any_multiple_of_f_and_attention_placement():
    kw = dict(base_channels=32, channel_mults=[1, 2], num_res_blocks=1, attn_resolutions=[8], resolution=16)
    enc = UNetEncoder(out_channels=6, **kw)
    dec = UNetDecoder(in_channels=3, **kw)
    assert len(enc.down[1].attn) == 1 and len(enc.down[0].attn) == 0
    assert len(dec.up[1].attn) == 2 and len(dec.up[0].attn) == 0
    x = torch.randn(1, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    assert enc(x).shape == (1, 6, 6, 10)
    assert dec(torch.zeros(1, 3, 6, 10)).shape == (1, 3, 12, 20)


def test_vit_decoder_output_clamped_with_straight_through_gradient():
    x = torch.tensor([-3.0, -0.5, 0.2, 2.0], requires_grad=True)
    y = clamp_straight_through(x)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -0.5, 0.2, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))
    dec = ViTDecoder(image_size=8, patch_size=4, width=32, depth=1, heads=2, in_channels=4)
    with torch.no_grad():
        dec.conv_out.bias.fill_(5.0)
    out = dec(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 3, 8, 8) and out.min() >= -1 and out.max() <= 1


def test_vit_unpatchify_inverts_patch_order():
    # a decoder whose head writes token t's value into all of its patch pixels: raster order check
    dec = ViTDecoder(image_size=8, patch_size=4, width=16, depth=0, heads=2, in_channels=1)
    tokens = torch.arange(4.0).view(1, 4, 1) / 10
    with torch.no_grad():
        dec.post_quant_embed.weight.fill_(1.0), dec.post_quant_embed.bias.zero_(), dec.positional_embedding.zero_()
    dec.ln_pre, dec.ln_post, dec.ffn = torch.nn.Identity(), torch.nn.Identity(), torch.nn.Identity()
    dec.conv_out = torch.nn.Linear(16, 48)
    with torch.no_grad():
        dec.conv_out.weight.fill_(1.0 / 16), dec.conv_out.bias.zero_()
    img = dec(tokens)[0, 0]
    expected = torch.tensor([[0.0, 0.1], [0.2, 0.3]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    torch.testing.assert_close(img, expected)


def test_vit_patch_embedding_is_the_references_channel_major_linear():
    # the reference flattens each patch as (c, sh, sw) and applies a bias-free linear map: a conv with the
    # same weights reshaped to (W, C, p, p) must give the same tokens
    g = torch.Generator().manual_seed(0)
    enc = ViTEncoder(image_size=8, patch_size=4, width=16, depth=0, heads=2, out_channels=4)
    assert enc.conv1.bias is None
    x = torch.randn(2, 3, 8, 8, generator=g)
    conv = torch.nn.functional.conv2d(x, enc.conv1.weight.reshape(16, 3, 4, 4), stride=4)
    expected = conv.flatten(2).transpose(1, 2) + enc.positional_embedding
    b, c, gg, p = 2, 3, 2, 4
    tokens = x.reshape(b, c, gg, p, gg, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gg * gg, c * p * p)
    torch.testing.assert_close(enc.conv1(tokens) + enc.positional_embedding, expected)


def test_vit_attention_equals_torch_multihead_attention_with_the_same_state_dict():
    from gaussquant.models.vit import PackedSelfAttention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(24, 3).eval()  # the reference's module (token-first)
    ours = PackedSelfAttention(24, 3)
    ours.load_state_dict({k: v for k, v in mha.state_dict().items()}, strict=True)
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(1))
    expected = mha(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)


def test_vit_initialisation_is_the_references():
    torch.manual_seed(0)
    enc = ViTEncoder(image_size=64, patch_size=4, width=64, depth=2, heads=4, out_channels=8)
    dec = ViTDecoder(image_size=64, patch_size=4, width=64, depth=2, heads=4, in_channels=4)
    for m in (enc, dec):
        pos = m.positional_embedding
        assert abs(pos.std().item() - 0.02) < 0.002 and abs(pos.mean().item()) < 0.002  # N(0, 0.02), 16k values
        for name, p in m.transformer.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(p) == 0, name
            elif ".ln_" in name:
                assert torch.all(p == 1), name
            else:  # truncated normal 0.02, cut at +-2 (never reached at this std)
                assert abs(p.std().item() - 0.02) < 0.003 and p.abs().max() < 0.2, name
    for w in (enc.conv1.weight, dec.ffn[0].weight, dec.conv_out.weight):
        assert abs(w.std().item() - 0.02) < 0.003
    # quant_embed / post_quant_embed keep PyTorch's default Linear init, as in the reference
    bound = 64 ** -0.5
    assert enc.quant_embed.weight.abs().max() <= bound and enc.quant_embed.weight.std() > 0.1 * bound


def test_tiny_and_small_vit_presets_run_with_the_same_code():
    for arch, size in (("vit-tiny", 32), ("vit-small", 64)):
        enc, dec = build_encoder_decoder(ModelConfig(arch=arch, image_size=size), 8, 4)
        x = torch.zeros(1, 3, size, size)
        h = enc(x)
        assert h.shape[-1] == 8 and dec(h[..., :4]).shape == (1, 3, size, size)
        assert "ln_pre.weight" in enc.state_dict() and "transformer.resblocks.0.attn.in_proj_weight" in dec.state_dict()


def test_vit_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTEncoder(image_size=30, patch_size=4, width=16, depth=1, heads=2, out_channels=4)
    enc = ViTEncoder(image_size=16, patch_size=4, width=16, depth=1, heads=2, out_channels=4)
    with pytest.raises(ValueError, match="Resize or crop the images to 16"):
        enc(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible by heads"):
        ViTEncoder(image_size=16, patch_size=4, width=18, depth=1, heads=4, out_channels=4)


def test_preset_table_is_consistent():
    assert set(ARCH_PRESETS) == {"unet-tiny", "unet-small", "unet-paper", "vit-tiny", "vit-small", "vit-paper"}
    assert ARCH_PRESETS["unet-paper"].downsample_factor == 8 and ARCH_PRESETS["unet-paper"].z_channels == 16
    assert ARCH_PRESETS["unet-tiny"].downsample_factor == 4
    assert ARCH_PRESETS["vit-paper"].downsample_factor == 8


def test_model_config_errors():
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig(arch="unet-huge")
    with pytest.raises(ValueError, match="downsampling factor 8"):
        ModelConfig(arch="unet-paper", image_size=100)
    with pytest.raises(ValueError, match="no dropout"):
        ModelConfig(arch="vit-tiny", image_size=32, dropout=0.1)

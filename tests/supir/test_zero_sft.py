"""ZeroSFT and ZeroCrossAttn: the released formula by default, the identity-at-init form behind an option."""

import torch

from supir.zero_sft import ZeroCrossAttn, ZeroSFT


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 32, 8, 8, generator=g),
        torch.randn(2, 32, 8, 8, generator=g),
        torch.randn(2, 64, 8, 8, generator=g),
    )


def test_residual_form_is_exactly_the_identity_at_init():
    c, skip, dec = _inputs()
    sft = ZeroSFT(32, 32, 64, residual=True)
    assert torch.equal(sft(c, skip, dec), torch.cat([dec, skip], 1))
    mid = ZeroSFT(32, 32, 0, residual=True)
    assert torch.equal(mid(c, skip), skip)


def test_released_form_is_the_default_and_normalises_at_init():
    # The release's GN(h)(1+γ)+β: at init (γ=β=0) the skip is replaced by its group normalisation.
    c, skip, dec = _inputs()
    sft = ZeroSFT(32, 32, 64)
    h = torch.cat([dec, skip], 1)
    torch.testing.assert_close(sft(c, skip, dec), sft.norm(h))
    assert not torch.allclose(sft(c, skip, dec), h, atol=1e-3)


def test_zero_sft_formula_and_control_scale():
    # Was pinned to the residual form; the default is now the release's (issue 12).
    c, skip, dec = _inputs()
    sft = ZeroSFT(32, 32, 64)
    with torch.no_grad():
        for p in sft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    h_raw = torch.cat([dec, skip], 1)
    h = torch.cat([dec, skip + sft.zero_conv(c)], 1)
    a = sft.mlp_shared(c)
    expected = sft.norm(h) * (1 + sft.zero_mul(a)) + sft.zero_add(a)
    torch.testing.assert_close(sft(c, skip, dec), expected)
    torch.testing.assert_close(sft(c, skip, dec, control_scale=0.0), h_raw)
    torch.testing.assert_close(sft(c, skip, dec, control_scale=0.3), 0.3 * expected + 0.7 * h_raw)


def test_zero_cross_attn_identity_with_zero_out_then_attends():
    c, _, x = _inputs()
    assert not torch.allclose(ZeroCrossAttn(32, 64)(c, x), x)  # released: output projection not zeroed
    attn = ZeroCrossAttn(32, 64, zero_out=True)
    assert torch.equal(attn(c, x), x)
    with torch.no_grad():
        attn.attn.to_out[0].weight.normal_(0, 0.1)
    moved = attn(c, x)
    assert not torch.allclose(moved, x)
    torch.testing.assert_close(attn(c, x, control_scale=0.0), x)
    # The change depends on the control feature.
    assert not torch.allclose(attn(c * 2 + 1, x), moved)

"""ZeroSFT and ZeroCrossAttn: identity at initialisation, the paper's formula once trained."""

import torch

from supir.zero_sft import ZeroCrossAttn, ZeroSFT


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 32, 8, 8, generator=g),
        torch.randn(2, 32, 8, 8, generator=g),
        torch.randn(2, 64, 8, 8, generator=g),
    )


def test_zero_sft_is_exactly_the_identity_at_init():
    c, skip, dec = _inputs()
    sft = ZeroSFT(32, 32, 64)
    assert torch.equal(sft(c, skip, dec), torch.cat([dec, skip], 1))
    mid = ZeroSFT(32, 32, 0)
    assert torch.equal(mid(c, skip), skip)


def test_reference_form_normalises_at_init():
    # The released code's GN(h)(1+γ)+β is not the identity at init: why we use the residual form.
    c, skip, dec = _inputs()
    out = ZeroSFT(32, 32, 64, residual=False)(c, skip, dec)
    assert not torch.allclose(out, torch.cat([dec, skip], 1), atol=1e-3)


def test_zero_sft_formula_and_control_scale():
    c, skip, dec = _inputs()
    sft = ZeroSFT(32, 32, 64)
    with torch.no_grad():
        for p in sft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    h_raw = torch.cat([dec, skip], 1)
    h = torch.cat([dec, skip + sft.zero_conv(c)], 1)
    a = sft.mlp_shared(c)
    expected = h + sft.norm(h) * sft.zero_mul(a) + sft.zero_add(a)
    torch.testing.assert_close(sft(c, skip, dec), expected)
    torch.testing.assert_close(sft(c, skip, dec, control_scale=0.0), h_raw)
    torch.testing.assert_close(sft(c, skip, dec, control_scale=0.3), 0.3 * expected + 0.7 * h_raw)


def test_zero_cross_attn_identity_at_init_then_attends():
    c, _, x = _inputs()
    attn = ZeroCrossAttn(32, 64)
    assert torch.equal(attn(c, x), x)
    with torch.no_grad():
        attn.attn.to_out[0].weight.normal_(0, 0.1)
    moved = attn(c, x)
    assert not torch.allclose(moved, x)
    torch.testing.assert_close(attn(c, x, control_scale=0.0), x)
    # The change depends on the control feature.
    assert not torch.allclose(attn(c * 2 + 1, x), moved)

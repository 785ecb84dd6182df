"""The connectors between the adaptor and the frozen SDXL decoder (paper §3.1, Fig. 3(c)).

ZeroSFT = zero convolution + spatial feature transform (SFT) + group normalisation, blended with the
untouched decoder input by a control scale. ZeroCrossAttn lets the decoder attend to the control
feature at the two upsampling points.

Both follow the released SUPIR code (`SUPIR/modules/SUPIR_v0.py`), so released weights run here
and weights trained here export back (supir.convert): the SFT branch is ``GN(h)·(1+γ)+β`` and
ZeroCrossAttn's output projection starts random (its zero initialisation is commented out there).
At initialisation (γ=β=0) every skip connection is therefore replaced by its group normalisation:
the untrained model does NOT reproduce SDXL, which is why training starts from the release
(`init_from:`) or accepts that first stretch.

``residual=True`` keeps the other form behind an option: ``h + GN(h)·γ + β`` with a zeroed
cross-attention output, the exact identity at initialisation (the ControlNet property), at the same
parameter count. Its weights mean something else, so they cannot be exported to the release layout.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

SFT_HIDDEN = 128  # channels of the shared SFT trunk, as in the reference code
GROUPS = 32  # GroupNorm32 of the reference code


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` (ControlNet's zero convolution)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int) -> nn.GroupNorm:
    # Tiny test models have fewer than 32 channels per level: fall back to the largest divisor.
    groups = next(g for g in range(min(GROUPS, channels), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-5, affine=True)


class ZeroSFT(nn.Module):
    """Inject control feature `c` into the decoder at one skip connection.

    ``forward(c, h_skip, h_dec, s)``:
      h_raw = [h_dec, h_skip]                 (what the frozen decoder block would have received)
      h     = [h_dec, h_skip + zero_conv(c)]
      γ, β  = zero_mul(a), zero_add(a)  with  a = SiLU(conv3×3(c))
      h     = GN(h)·(1+γ) + β                 (residual=True: h + GN(h)·γ + β)
      out   = s·h + (1−s)·h_raw
    After the middle block there is no decoder input: ``h_dec=None`` and h_raw = h_skip.
    """

    def __init__(self, control_channels: int, skip_channels: int, decoder_channels: int = 0, residual=False):
        super().__init__()
        total = skip_channels + decoder_channels
        self.residual = residual
        self.norm = group_norm(total)
        self.mlp_shared = nn.Sequential(nn.Conv2d(control_channels, SFT_HIDDEN, 3, padding=1), nn.SiLU())
        self.zero_mul = zero_module(nn.Conv2d(SFT_HIDDEN, total, 3, padding=1))
        self.zero_add = zero_module(nn.Conv2d(SFT_HIDDEN, total, 3, padding=1))
        self.zero_conv = zero_module(nn.Conv2d(control_channels, skip_channels, 1))

    def forward(
        self, c: torch.Tensor, h_skip: torch.Tensor, h_dec: torch.Tensor | None = None, control_scale=1.0
    ) -> torch.Tensor:
        # Same concatenation order as diffusers' up blocks: cat([decoder, skip]).
        h_raw = h_skip if h_dec is None else torch.cat([h_dec, h_skip], dim=1)
        c = c.to(h_skip.dtype)
        h = h_skip + self.zero_conv(c)
        if h_dec is not None:
            h = torch.cat([h_dec, h], dim=1)
        actv = self.mlp_shared(c)
        gamma, beta = self.zero_mul(actv), self.zero_add(actv)
        if self.residual:
            h = h + self.norm(h) * gamma + beta
        else:
            h = self.norm(h) * (1 + gamma) + beta
        if isinstance(control_scale, (int, float)) and control_scale == 1:
            return h  # exact: no rounding from the blend when the scale is 1
        return h * control_scale + h_raw * (1 - control_scale)


class ZeroCrossAttn(nn.Module):
    """Decoder feature `x` attends to control feature `c` (both group-normalised); residual × scale.

    Heads of 64 channels as in the release (at least one for tiny test models). The output projection
    keeps its random initialisation, as released; ``zero_out=True`` zeroes it (identity at init).
    """

    def __init__(self, control_channels: int, query_channels: int, zero_out: bool = False):
        super().__init__()
        heads = max(1, query_channels // 64)
        self.norm_x = group_norm(query_channels)
        self.norm_c = group_norm(control_channels)
        self.attn = Attention(
            query_dim=query_channels,
            cross_attention_dim=control_channels,
            heads=heads,
            dim_head=64,
            bias=False,
            out_bias=True,
        )
        if zero_out:
            zero_module(self.attn.to_out[0])

    def forward(self, c: torch.Tensor, x: torch.Tensor, control_scale=1.0) -> torch.Tensor:
        b, ch, height, width = x.shape
        q = self.norm_x(x).flatten(2).transpose(1, 2)
        kv = self.norm_c(c.to(x.dtype)).flatten(2).transpose(1, 2)
        out = self.attn(q, encoder_hidden_states=kv)
        out = out.transpose(1, 2).reshape(b, ch, height, width)
        return x + out * control_scale

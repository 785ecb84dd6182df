"""The two ways to restore: the paper's settings and the released code's defaults.

`paper`: T = 100, λ = 7.5 (the paper's z_pos + λ(z_pos − z_neg), i.e. s = 8.5 in the released code's
x_u + s(x_c − x_u)), τ_r = 4 pulling toward z_LQ = E_dr(x_LQ), no churn; the image's own size (a
multiple of 8) and size conditioning; no colour fix. This was `supir.restore`'s only behaviour.

`release`: the official test.py defaults (SUPIR repository, `test.py` + `SUPIR_model.batchify_sample`
+ sgm's `RestoreEDMSampler`/`LinearCFG`): 50 steps; CFG s ramped linearly over σ̂ from 1 at σ_max to
4 at σ → 0 (λ from 0 to 3); S_churn 5, S_noise 1.01; restoration guidance off (`s_stage1 = -1`),
and when switched on (`--tau-r 4`) it pulls toward E(D(E_dr(x_LQ))), a posterior sample of the
cleaned LQ re-encoded by the plain VAE; the input upscaled to a short side ≥ 1024 and a multiple of
64; SDXL size conditioning fixed at 1024×1024 with crop (0, 0); the caption prepended to the
positive prompt with no separator (`''.join`); the wavelet colour fix against D(E_dr(x_LQ)); seed 1234.
`release-gradio` is the gradio demo's "Quality" preset: s from 4 to 7.5, S_noise 1.003.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supir.sampler import SamplerConfig, lambda_from_sgm_scale

RELEASED_SIZE = 1024  # SDXL's native size: the release's minimum short side and its size conditioning


@dataclass(frozen=True)
class RestoreSettings:
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    min_size: int = 0  # the working image's short side is raised to at least this (0: never)
    size_multiple: int = 8  # the working size is rounded to a multiple of this (8 = one latent cell)
    fixed_size_conditioning: bool = False  # True: time ids 1024/1024/(0,0); False: the working size
    guidance_target: str = "hint"  # "hint": z_LQ = E_dr(x) (mean); "cleaned": E(D(E_dr(x))) (sample)
    color_fix: str | None = None  # "wavelet" | "adain" | None, against D(E_dr(x_LQ))
    negative: str = "paper"  # key of supir.prompts.NEGATIVE_PROMPTS
    prompt_join: str = " "  # caption + this + positive prompt
    seed: int = 0


def _released(cfg_scale: float, cfg_scale_start: float, s_noise: float) -> RestoreSettings:
    """The released defaults around its CFG ramp, given in the released convention (s, not λ)."""
    sampler = SamplerConfig(
        steps=50,
        cfg_scale=lambda_from_sgm_scale(cfg_scale),
        cfg_scale_start=lambda_from_sgm_scale(cfg_scale_start),
        tau_r=None,
        s_churn=5.0,
        s_noise=s_noise,
        control_scale=1.0,
    )
    return RestoreSettings(
        sampler=sampler,
        min_size=RELEASED_SIZE,
        size_multiple=64,
        fixed_size_conditioning=True,
        guidance_target="cleaned",
        color_fix="wavelet",
        negative="released",
        prompt_join="",
        seed=1234,
    )


SETTINGS = {
    "paper": RestoreSettings(),
    "release": _released(cfg_scale=4.0, cfg_scale_start=1.0, s_noise=1.01),  # test.py
    "release-gradio": _released(cfg_scale=7.5, cfg_scale_start=4.0, s_noise=1.003),  # gradio "Quality"
}


def working_size(
    width: int, height: int, upscale: float, min_size: int, multiple: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((W, H) the network works at, (W, H) of the output): the released PIL2Tensor rule.

    The output is the input × upscale; the working size raises its short side to `min_size` and rounds
    each side to a multiple of `multiple` (half to even, as numpy), at least 64 px.
    """
    w, h = width * upscale, height * upscale
    out = (round(w), round(h))
    if min_size and min(w, h) < min_size:
        factor = min_size / min(w, h)
        w, h = w * factor, h * factor
    work = tuple(max(64, round(v / multiple) * multiple) for v in (w, h))
    return work, out

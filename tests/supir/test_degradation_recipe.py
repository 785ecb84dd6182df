"""Recipe sampling: frequencies match the configured probabilities (chi-square over thousands of
draws), every drawn value lies in its configured range, and recipes are reproducible records."""

import collections
import json
import math

import numpy as np
import pytest
from scipy import stats

from supir.degradation import DegradationConfig, Recipe, preset, rng_for, sample_recipe

N = 4000
P_MIN = 1e-4  # fixed seeds: a correct sampler passes deterministically; a wrong one fails by far


@pytest.fixture(scope="module")
def recipes():
    cfg = preset("realesrgan")
    return cfg, [sample_recipe(cfg, rng_for(7, f"image-{i}")) for i in range(N)]


def chi2_pvalue(values, categories, probs) -> float:
    counts = collections.Counter(values)
    assert set(counts) <= set(categories), f"unexpected categories {set(counts) - set(categories)}"
    observed = np.array([counts[c] for c in categories], dtype=float)
    expected = np.array(probs, dtype=float) * len(values)
    keep = expected > 0
    assert observed[~keep].sum() == 0, "drew a category of probability 0"
    return stats.chisquare(observed[keep], expected[keep]).pvalue


def test_chi2_helper_rejects_a_wrong_distribution():
    # guards the guard: a sampler with sinc_prob 0.3 instead of 0.1 must be caught
    cfg = preset("realesrgan").replace(sinc_prob=0.3)
    kinds = [sample_recipe(cfg, rng_for(1, str(i))).first.kernel.kind == "sinc" for i in range(2000)]
    assert chi2_pvalue(kinds, [True, False], [0.1, 0.9]) < 1e-10


def test_kernel_type_frequencies(recipes):
    cfg, rs = recipes
    for order, sinc_prob, kinds, probs in (
        ("first", cfg.sinc_prob, cfg.kernel_list, cfg.kernel_prob),
        ("second", cfg.sinc_prob2, cfg.kernel_list2, cfg.kernel_prob2),
    ):
        # the second blur is skipped 20% of the time; its kernel is still drawn, but only the applied
        # ones are recorded, which does not change the type distribution
        drawn = [getattr(r, order).kernel.kind for r in rs if getattr(r, order).kernel is not None]
        cats = ["sinc", *kinds]
        p = [sinc_prob, *[(1 - sinc_prob) * q for q in probs]]
        assert chi2_pvalue(drawn, cats, p) > P_MIN, order
    sizes = [r.first.kernel.size for r in rs]
    assert chi2_pvalue(sizes, list(cfg.kernel_sizes), [1 / len(cfg.kernel_sizes)] * len(cfg.kernel_sizes)) > P_MIN


def test_resize_noise_and_final_order_frequencies(recipes):
    cfg, rs = recipes
    dirs = ["up", "down", "keep"]
    assert chi2_pvalue([r.first.resize.direction for r in rs], dirs, cfg.resize_prob) > P_MIN
    assert chi2_pvalue([r.second.resize.direction for r in rs], dirs, cfg.resize_prob2) > P_MIN
    modes = list(cfg.resize_modes)
    for picks in ([r.first.resize.mode for r in rs], [r.second.resize.mode for r in rs],
                  [r.final.resize_mode for r in rs]):
        assert chi2_pvalue(picks, modes, [1 / 3] * 3) > P_MIN
    for order, gp, grayp in (("first", cfg.gaussian_noise_prob, cfg.gray_noise_prob),
                             ("second", cfg.gaussian_noise_prob2, cfg.gray_noise_prob2)):
        noises = [getattr(r, order).noise for r in rs]
        assert chi2_pvalue([n.kind for n in noises], ["gaussian", "poisson"], [gp, 1 - gp]) > P_MIN
        assert chi2_pvalue([n.gray for n in noises], [True, False], [grayp, 1 - grayp]) > P_MIN
    assert chi2_pvalue([r.second.kernel is not None for r in rs], [True, False],
                       [cfg.second_blur_prob, 1 - cfg.second_blur_prob]) > P_MIN
    assert chi2_pvalue([r.final.sinc is not None for r in rs], [True, False],
                       [cfg.final_sinc_prob, 1 - cfg.final_sinc_prob]) > P_MIN
    assert chi2_pvalue([r.final.sinc_first for r in rs], [True, False],
                       [cfg.sinc_first_prob, 1 - cfg.sinc_first_prob]) > P_MIN
    # JPEG qualities: integers, uniform over the inclusive range
    qs = list(range(cfg.jpeg_range[0], cfg.jpeg_range[1] + 1))
    assert chi2_pvalue([r.first.jpeg_quality for r in rs], qs, [1 / len(qs)] * len(qs)) > P_MIN
    assert chi2_pvalue([r.final.jpeg_quality for r in rs], qs, [1 / len(qs)] * len(qs)) > P_MIN


@pytest.mark.parametrize("name", ["realesrgan", "stablesr"])
def test_every_drawn_value_lies_in_its_range(recipes, name):
    cfg, rs = recipes
    if name != "realesrgan":
        cfg = preset(name)
        rs = [sample_recipe(cfg, rng_for(9, f"image-{i}")) for i in range(2000)]
    for r in rs:
        for order, sigma, betag, betap in (("first", cfg.blur_sigma, cfg.betag_range, cfg.betap_range),
                                           ("second", cfg.blur_sigma2, cfg.betag_range2, cfg.betap_range2)):
            k = getattr(r, order).kernel
            if k is None:
                continue
            if k.kind == "sinc":
                lo = math.pi / 3 if k.size < 13 else math.pi / 5
                assert lo <= k.omega_c <= math.pi
                continue
            assert sigma[0] <= k.sigma_x <= sigma[1] and sigma[0] <= k.sigma_y <= sigma[1]
            if k.kind.endswith("_iso") or k.kind == "iso":
                assert k.sigma_x == k.sigma_y and k.rotation == 0.0
            else:
                assert -math.pi <= k.rotation <= math.pi
            if k.kind.startswith("generalized"):
                assert betag[0] <= k.beta <= betag[1]
            elif k.kind.startswith("plateau"):
                assert betap[0] <= k.beta <= betap[1]
            else:
                assert k.beta == 1.0
        f, s = r.first, r.second
        bounds = {"up": (1.0, cfg.resize_range[1]), "down": (cfg.resize_range[0], 1.0), "keep": (1.0, 1.0)}
        lo, hi = bounds[f.resize.direction]
        assert lo <= f.resize.scale <= hi
        bounds2 = {"up": (1.0, cfg.resize_range2[1]), "down": (cfg.resize_range2[0], 1.0), "keep": (1.0, 1.0)}
        lo, hi = bounds2[s.resize.direction]
        assert lo <= s.resize.scale <= hi
        for noise, sig, pois in ((f.noise, cfg.noise_range, cfg.poisson_scale_range),
                                 (s.noise, cfg.noise_range2, cfg.poisson_scale_range2)):
            lo, hi = sig if noise.kind == "gaussian" else pois
            assert lo <= noise.level <= hi
            assert 0 <= noise.seed < 2**63
        assert cfg.jpeg_range[0] <= f.jpeg_quality <= cfg.jpeg_range[1]
        assert cfg.jpeg_range2[0] <= r.final.jpeg_quality <= cfg.jpeg_range2[1]
        if r.final.sinc is not None:
            assert math.pi / 3 <= r.final.sinc.omega_c <= math.pi and r.final.sinc.size in cfg.final_sinc_sizes
    # generalized/plateau beta: half from U(lo, 1), half from U(1, hi) (Real-ESRGAN's two-sided draw;
    # plateau's lo is 1, so its lower half is exactly 1)
    betas = [r.first.kernel.beta for r in rs if r.first.kernel.kind.startswith(("generalized", "plateau"))]
    assert chi2_pvalue([b <= 1 for b in betas], [True, False], [0.5, 0.5]) > P_MIN


def test_recipes_are_json_records_and_reproducible(recipes):
    _, rs = recipes
    for r in rs[:200]:
        blob = json.dumps(r.to_dict())
        assert Recipe.from_dict(json.loads(blob)) == r
    cfg = preset("realesrgan")
    assert sample_recipe(cfg, rng_for(7, "image-3")) == rs[3]
    assert sample_recipe(cfg, rng_for(8, "image-3")) != rs[3]
    assert len({r.first.noise.seed for r in rs}) == len(rs)


def test_diffbir_is_single_order_with_downsampling_factors():
    cfg = preset("diffbir")
    rs = [sample_recipe(cfg, rng_for(0, str(i))) for i in range(500)]
    assert all(r.second is None and r.final is None for r in rs)
    assert all(r.first.kernel.kind in ("iso", "aniso") and r.first.kernel.size == 41 for r in rs)
    factors = np.array([1 / r.first.resize.scale for r in rs])
    assert factors.min() >= 1 and factors.max() <= 12
    assert stats.kstest(factors, stats.uniform(1, 11).cdf).pvalue > P_MIN


# ------------------------------------------------------------------------------ config
def test_presets_and_overrides():
    assert preset("realesrgan") == DegradationConfig()
    assert preset("supir").lq_size == "gt" and preset("supir").replace(lq_size="scaled") == DegradationConfig()
    assert preset("stablesr").jpeg_range2 == (60, 100)
    assert preset().lq_size == "gt"  # the default preset is SUPIR's
    with pytest.raises(Exception, match="unknown degradation preset"):
        preset("nope")
    with pytest.raises(Exception, match="unknown fields"):
        preset("supir").replace(noise_sigma=3)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_round_trip(tmp_path, suffix):
    cfg = preset("stablesr").replace(gt_usm=True, noise_range=(2.0, 9.0))
    path = tmp_path / f"deg{suffix}"
    cfg.save(path)
    assert DegradationConfig.from_file(path) == cfg
    # a partial file: a preset plus overrides, possibly nested under `degradation:`
    path.write_text(json.dumps({"degradation": {"preset": "supir", "jpeg_range": [40, 90]}}))
    loaded = DegradationConfig.from_file(path)
    assert loaded.lq_size == "gt" and loaded.jpeg_range == (40, 90)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kernel_prob": (0.5, 0.5, 0, 0, 0, 0.2)}, "sum to 1"),
        ({"kernel_sizes": (7, 8)}, "odd"),
        ({"jpeg_range": (95, 30)}, "jpeg_range"),
        ({"resize_range": (0.0, 1.5)}, "resize_range"),
        ({"sinc_prob": 1.5}, "probability"),
        ({"kernel_list": ("iso", "box", "aniso", "generalized_iso", "plateau_iso", "plateau_aniso")}, "unknown"),
        ({"lq_size": "half"}, "lq_size"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_error(overrides, message):
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        preset("realesrgan").replace(**overrides)


def test_bad_config_files_raise_config_errors(tmp_path):
    from schemas.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("noise_range: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid"):
        DegradationConfig.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        DegradationConfig.from_file(tmp_path / "missing.yaml")

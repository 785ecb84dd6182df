"""`supir-data degrade-preview`: a labelled grid PNG from a real photo, through the real CLI."""

import cv2
import numpy as np
import pytest
import skimage.data

from pipelines.devtools.preview import preview_grid, recipe_label
from supir.degradation import preset, rng_for, sample_recipe


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "coffee.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR))
    return path


def test_degrade_preview_writes_a_grid(run_cli, tmp_path, photo_path):
    out = tmp_path / "grids" / "grid.png"
    result = run_cli(tmp_path, "degrade-preview", photo_path, "--preset", "realesrgan", "--n", "4",
                     "--seed", "3", "--crop", "96", "--out", out)
    assert "wrote" in result.output
    grid = cv2.imread(str(out))
    assert grid is not None
    # 4 cells in 2 columns of (GT | LQ) pairs, each with a label strip under it
    assert grid.shape[1] == 2 * (2 * 96 + 4 + 8)
    assert grid.shape[0] > 2 * 96
    # same seed, same grid
    again = tmp_path / "again.png"
    run_cli(tmp_path, "degrade-preview", photo_path, "--preset", "realesrgan", "--n", "4", "--seed", "3",
            "--crop", "96", "--out", again)
    assert np.array_equal(cv2.imread(str(again)), grid)


def test_degrade_preview_reads_a_config_file(run_cli, tmp_path, photo_path):
    config = tmp_path / "deg.yaml"
    preset("stablesr").replace(jpeg_range=(90, 95)).save(config)
    out = tmp_path / "grid.png"
    run_cli(tmp_path, "degrade-preview", photo_path, "--config", config, "--n", "2", "--crop", "64", "--out", out)
    assert cv2.imread(str(out)) is not None


def test_degrade_preview_refuses_bad_input_clearly(run_cli, tmp_path):
    missing = tmp_path / "nope.png"
    missing.write_bytes(b"not an image")
    result = run_cli(tmp_path, "degrade-preview", missing, "--out", tmp_path / "g.png", expect_exit=1)
    assert "cannot read" in str(result.exception)
    result = run_cli(tmp_path, "degrade-preview", missing, "--preset", "bogus", "--out", tmp_path / "g.png",
                     expect_exit=2)
    assert "bogus" in result.output


def test_labels_name_the_main_parameters():
    recipe = sample_recipe(preset("realesrgan"), rng_for(0, "label"))
    lines = recipe_label(recipe)
    assert len(lines) == 3
    assert f"q{recipe.first.jpeg_quality}" in lines[0] and f"q{recipe.final.jpeg_quality}" in lines[2]
    assert recipe.first.resize.mode in lines[0]
    kinds = {"generalized_iso": "gen_iso", "generalized_aniso": "gen_aniso", "plateau_iso": "plat_iso",
             "plateau_aniso": "plat_aniso"}
    assert kinds.get(recipe.first.kernel.kind, recipe.first.kernel.kind) in lines[0]
    grid = preview_grid(skimage.data.astronaut()[:80, :80], preset("diffbir"), n=1, crop=64)
    assert grid.shape[0] > 64 and grid.shape[2] == 3

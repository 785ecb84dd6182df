"""`degrade-preview`: a labelled grid of GT crops and their degradations, to see what a recipe does.

    supir-data degrade-preview photo.jpg --preset supir --n 16 --seed 0 --out grid.png

Each cell is a GT crop (left) and its LQ (right; shown at the crop's size with nearest-neighbour
up-sampling so the LQ's own pixels stay visible), with the recipe's main parameters underneath.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import cv2
import numpy as np

from schemas.errors import InputImageError
from supir.degradation import DegradationConfig, Recipe, apply, preset, rng_for, sample_recipe
from supir.degradation.config import PRESETS
from supir.image_io import DEFAULT_MAX_PIXELS, Rejected, open_rgb

LABEL_LINES = 4
SHORT_KIND = {"generalized_iso": "gen_iso", "generalized_aniso": "gen_aniso", "plateau_iso": "plat_iso",
              "plateau_aniso": "plat_aniso"}
LINE_HEIGHT = 14
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _kernel_text(spec) -> str:
    if spec is None:
        return "none"
    if spec.kind == "sinc":
        return f"sinc{spec.size} wc={spec.omega_c:.2f}"
    text = f"{SHORT_KIND.get(spec.kind, spec.kind)}{spec.size} s={spec.sigma_x:.1f}"
    if spec.kind.endswith("aniso"):
        text += f"/{spec.sigma_y:.1f}"
    if spec.kind.startswith(("generalized", "plateau")):
        text += f" b={spec.beta:.1f}"
    return text


def _noise_text(noise) -> str:
    kind = "gauss" if noise.kind == "gaussian" else "poisson"
    return f"{kind} {noise.level:.2f}{' gray' if noise.gray else ''}"


def recipe_label(recipe: Recipe) -> list[str]:
    """Three short lines: first order, second order, final step."""
    f = recipe.first
    lines = [f"1: {_kernel_text(f.kernel)} | x{f.resize.scale:.2f} {f.resize.mode} | {_noise_text(f.noise)}"
             + (f" | q{f.jpeg_quality}" if f.jpeg_quality is not None else "")]
    if recipe.second is not None:
        s, fin = recipe.second, recipe.final
        lines.append(f"2: {_kernel_text(s.kernel)} | x{s.resize.scale:.2f} {s.resize.mode} | {_noise_text(s.noise)}")
        order = "sinc>jpeg" if fin.sinc_first else "jpeg>sinc"
        lines.append(f"F: {_kernel_text(fin.sinc)} | {fin.resize_mode} | q{fin.jpeg_quality} {order}")
    return lines


def _label_strip(lines: list[str], width: int) -> np.ndarray:
    strip = np.full((LABEL_LINES * LINE_HEIGHT + 6, width, 3), 255, np.uint8)
    for i, line in enumerate(lines[:LABEL_LINES]):
        cv2.putText(strip, line, (4, 12 + i * LINE_HEIGHT), FONT, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def preview_grid(image: np.ndarray, config: DegradationConfig, n: int = 16, seed: int = 0,
                 crop: int = 256) -> np.ndarray:
    """RGB grid of ``n`` (GT crop, LQ) pairs, each labelled with its recipe."""
    h, w = image.shape[:2]
    crop = min(crop, h, w)
    cells = []
    for i in range(n):
        pos = rng_for(seed, f"degrade-preview-crop:{i}")
        top, left = int(pos.integers(h - crop + 1)), int(pos.integers(w - crop + 1))
        gt = np.ascontiguousarray(image[top : top + crop, left : left + crop])
        recipe = sample_recipe(config, rng_for(seed, f"degrade-preview:{i}"))
        lq = apply(recipe, gt)
        lq_shown = cv2.resize(lq, (crop, crop), interpolation=cv2.INTER_NEAREST)
        pair = np.concatenate([gt, np.full((crop, 4, 3), 255, np.uint8), lq_shown], axis=1)
        lines = [f"#{i}  GT {crop}x{crop} -> LQ {lq.shape[1]}x{lq.shape[0]}", *recipe_label(recipe)]
        cells.append(np.concatenate([pair, _label_strip(lines, pair.shape[1])], axis=0))
    cols = max(1, math.ceil(math.sqrt(n / 2)))  # pairs are twice as wide as tall: keep the grid squarish
    rows = math.ceil(n / cols)
    ch, cw = cells[0].shape[:2]
    grid = np.full((rows * (ch + 8), cols * (cw + 8), 3), 230, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        grid[r * (ch + 8) : r * (ch + 8) + ch, c * (cw + 8) : c * (cw + 8) + cw] = cell
    return grid


def read_rgb(path: str | Path) -> np.ndarray:
    """The image as every stage sees it (`supir.image_io.open_rgb`: EXIF-oriented, alpha on white)."""
    try:
        return open_rgb(Path(path).read_bytes(), DEFAULT_MAX_PIXELS)
    except (OSError, Rejected) as exc:
        raise InputImageError(f"cannot read {path} as an image: {exc}") from None


@click.command("degrade-preview")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="supir", show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML/JSON degradation config (overrides --preset).")
@click.option("--n", type=click.IntRange(1, 256), default=16, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crop", type=click.IntRange(16, 2048), default=256, show_default=True, help="GT crop size.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output PNG.")
@click.pass_obj
def degrade_preview_command(settings, image, preset_name, config_path, n, seed, crop, out):
    """A labelled grid of GT crops and their degradations (left GT, right LQ)."""
    config = DegradationConfig.from_file(config_path) if config_path else preset(preset_name)
    grid = preview_grid(read_rgb(image), config, n=n, seed=seed, crop=crop)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise InputImageError(f"cannot write {out}: use a .png path in a writable folder")
    click.echo(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]}, {n} samples, seed {seed})")

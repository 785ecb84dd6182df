"""Calibration of the cheap quality signals on real photographs at native resolution, per size band.

Images: pipelines/configs/calibration_images.yaml (Debian wallpaper packages, installed by
scripts/setup_system.sh): photographs, and illustrations (vector art, gradients, renders).
Bands: each photo area-reduced (never enlarged) to a 512, 1024 and 2048 px short side where it is
larger, saved as JPEG q95, plus the untouched file itself ("native"). Degraded copies are made at
the band's size: Gaussian blur σ 2 and 3, JPEG q20 and q10, RGB noise σ 15 and 25, 4x area-down then
bicubic-up (all but the JPEG ones saved as JPEG q95). Every file goes through ingest's decode and
`cheap_signals`, and is judged by the default thresholds (or --config).

    .venv/bin/python scripts/calibrate_quality.py --json rows.json --markdown table.md
"""

import io
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import cv2
import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.ingest.decode import decode  # noqa: E402
from pipelines.ingest.quality import cheap_signals, judge, load_thresholds  # noqa: E402

LISTING = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "calibration_images.yaml"
BANDS = (512, 1024, 2048)
KINDS = ("clean", "blur2", "blur3", "jpeg20", "jpeg10", "noise15", "noise25", "downup4")


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def degraded(rgb: np.ndarray, kind: str, seed: int) -> bytes:
    """The file of one degradation of ``rgb`` (at its own size)."""
    h, w = rgb.shape[:2]
    if kind.startswith("blur"):
        return _jpeg(cv2.GaussianBlur(rgb, (0, 0), float(kind[4:])))
    if kind.startswith("jpeg"):
        return _jpeg(rgb, int(kind[4:]))
    if kind.startswith("noise"):
        noise = np.random.default_rng(seed).standard_normal(rgb.shape, dtype=np.float32) * float(kind[5:])
        return _jpeg(np.clip(rgb + noise, 0, 255).round().astype(np.uint8))
    if kind == "downup4":
        small = cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        return _jpeg(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))
    raise ValueError(kind)


def _measure(data: bytes) -> dict:
    d = decode(data, 0, 1 << 40)
    signals = cheap_signals(d.pixels, d.scale, d.qtables, d.order)
    return {"width": d.header.width, "height": d.header.height, "scale": d.scale,
            **{k: None if v is None else float(v) for k, v in signals.items()}}


def image_rows(label: str, path: str, seed: int) -> list[dict]:
    """Signals of one listed image in every band (and of its degraded copies, for photos)."""
    data = Path(path).read_bytes()
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    short = min(rgb.shape[:2])
    rows = []
    for band in [b for b in BANDS if b < 0.97 * short] + ["native"]:
        if band == "native":
            img, files = rgb, {"clean": data}
        else:
            f = band / short
            img = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
            files = {"clean": _jpeg(img)}
        if label == "photo":
            files.update({kind: degraded(img, kind, seed) for kind in KINDS[1:]})
        for kind, blob in files.items():
            rows.append({"label": label, "image": Path(path).name, "band": str(band), "kind": kind, **_measure(blob)})
    return rows


def calibration_rows(workers: int = 2) -> list[dict]:
    listing = yaml.safe_load(LISTING.read_text())
    root = Path(listing["root"])
    jobs = [(label, str(root / rel), k) for label in ("photo", "illustration") for k, rel in enumerate(listing[label])]
    missing = [p for _, p, _ in jobs if not Path(p).exists()]
    if missing:
        raise click.ClickException(f"{len(missing)} calibration images missing (run scripts/setup_system.sh): {missing[:3]}")
    with ProcessPoolExecutor(workers) as pool:
        return [row for rows in pool.map(image_rows, *zip(*jobs)) for row in rows]


def confusion(rows: list[dict], config: str | None = None) -> str:
    """Markdown: per band, clean photos accepted, each degradation rejected, illustrations rejected."""
    thresholds = load_thresholds(config)
    for r in rows:
        r["verdict"] = judge(r, thresholds) or "accepted"
    head = ["band", *[f"{k} {'accepted' if k == 'clean' else 'rejected'}" for k in KINDS], "illustrations rejected"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for band in [*map(str, BANDS), "native"]:
        cells = [band]
        for kind in KINDS:
            part = [r for r in rows if r["band"] == band and r["label"] == "photo" and r["kind"] == kind]
            good = sum((r["verdict"] == "accepted") == (kind == "clean") for r in part)
            cells.append(f"{good}/{len(part)} ({100 * good / max(len(part), 1):.0f} %)")
        ill = [r for r in rows if r["band"] == band and r["label"] == "illustration"]
        bad = sum(r["verdict"] != "accepted" for r in ill)
        cells.append(f"{bad}/{len(ill)} ({100 * bad / max(len(ill), 1):.0f} %)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def misses(rows: list[dict]) -> list[str]:
    """One line per clean photo rejected and per degraded copy accepted (needs `confusion` first)."""
    out = []
    for r in rows:
        if r["label"] == "photo" and (r["verdict"] == "accepted") != (r["kind"] == "clean"):
            out.append(f"{r['band']:>6} {r['image'][:40]:40s} {r['kind']:8s} {r['verdict']:28s} "
                       f"sharpness {r['sharpness']:.3f} noise {r['noise_sigma']:.2f}")
    return out


@click.command()
@click.option("--config", default=None, help="Threshold YAML overriding pipelines/configs/quality.yaml.")
@click.option("--json", "json_path", default=None, help="Write the measured rows here (or read them, with --reuse).")
@click.option("--reuse", is_flag=True, help="Judge the rows in --json again instead of measuring.")
@click.option("--markdown", "markdown_path", default=None, help="Also write the confusion table here.")
@click.option("--workers", type=int, default=2, show_default=True)
def main(config, json_path, reuse, markdown_path, workers):
    rows = json.loads(Path(json_path).read_text()) if reuse else calibration_rows(workers)
    if json_path and not reuse:
        Path(json_path).write_text(json.dumps(rows) + "\n")
    table = confusion(rows, config)
    click.echo(table)
    click.echo("\n".join(misses(rows)))
    if markdown_path:
        Path(markdown_path).write_text(table + "\n")


if __name__ == "__main__":
    main()

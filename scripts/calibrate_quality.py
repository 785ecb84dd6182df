"""Calibration table of the cheap quality signals: real photos, clean and degraded, through ingest's decode.

For each scikit-image photo upscaled to SIDE px (short side), the clean copy (JPEG q95) and the four
degradations applied after the upscale (Gaussian blur σ=2, JPEG q15, RGB noise σ=20, 4× down-then-up)
are encoded, decoded by `pipelines.ingest.decode.decode` exactly as ingest does, measured by
`pipelines.ingest.quality.cheap_signals` and judged with the default thresholds (or --config).

    .venv/bin/python scripts/calibrate_quality.py --side 1024 --side 2048 --markdown docs/calibration.md
"""

import json
import math
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.devtools.demo_corpus import (  # noqa: E402
    DEGRADATIONS,
    PHOTOS,
    degraded_bytes,
    encode,
    load_photo,
    upscale_to,
)
from pipelines.ingest.decode import decode  # noqa: E402
from pipelines.ingest.quality import JUDGE_ORDER, cheap_signals, judge, load_thresholds  # noqa: E402

COLUMNS = ("sharpness", "noise_sigma", "jpeg_quality", "blockiness", "edge_density", "clipping", "colorfulness")


def calibration_rows(side: int, config: str | None = None, seed: int = 0) -> list[dict]:
    thresholds = load_thresholds(config)
    rows = []
    for name in PHOTOS:
        photo = upscale_to(load_photo(name), side)
        files = {"clean": encode(photo, "JPEG", quality=95)}
        files.update({kind: degraded_bytes(photo, kind, seed) for kind in DEGRADATIONS})
        for kind, data in files.items():
            decoded = decode(data, min_side=min(side, 1024), max_pixels=100_000_000)
            signals = cheap_signals(decoded.rgb, decoded.scale, decoded.qtables)
            verdict = judge(signals, thresholds)
            rows.append({"side": side, "photo": name.split(".")[0], "version": kind, "scale": decoded.scale,
                         **signals, "verdict": verdict or "accepted"})
    return rows


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    head = ["side", "photo", "version", "scale", *COLUMNS, "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in head) + " |" for row in rows]
    return "\n".join(lines)


def summary(rows: list[dict]) -> list[str]:
    """Per side: clean photos accepted, degraded copies rejected, and the margin of each signal."""
    out = []
    for side in sorted({r["side"] for r in rows}):
        part = [r for r in rows if r["side"] == side]
        clean = [r for r in part if r["version"] == "clean"]
        out.append(f"side {side}: clean accepted {sum(r['verdict'] == 'accepted' for r in clean)}/{len(clean)}")
        for kind in DEGRADATIONS:
            deg = [r for r in part if r["version"] == kind]
            reasons = sorted({r["verdict"] for r in deg})
            rejected = sum(r["verdict"] != "accepted" for r in deg)
            out.append(f"  {kind:7s} rejected {rejected}/{len(deg)}  ({', '.join(reasons)})")
        for signal in JUDGE_ORDER:
            values = [r[signal] for r in clean if r[signal] is not None]
            if values:
                out.append(f"  clean {signal:13s} range {min(values):8.3f} .. {max(values):8.3f}")
    return out


@click.command()
@click.option("--side", "sides", type=int, multiple=True, default=(1024, 2048), show_default=True,
              help="Short side the photos are upscaled to before degrading.")
@click.option("--config", default=None, help="Threshold YAML overriding pipelines/configs/quality.yaml.")
@click.option("--markdown", "markdown_path", default=None, help="Also write the table as Markdown here.")
@click.option("--json", "json_path", default=None, help="Also write the rows as JSON here.")
def main(sides, config, markdown_path, json_path):
    rows = [row for side in sides for row in calibration_rows(side, config)]
    table = markdown_table(rows)
    click.echo(table)
    click.echo("\n".join(summary(rows)))
    if markdown_path:
        Path(markdown_path).write_text(table + "\n")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

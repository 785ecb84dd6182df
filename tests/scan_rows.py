"""Register image files that a test or benchmark wrote as accepted `scans` rows (no ingest run)."""

import hashlib
from pathlib import Path

from PIL import Image

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from schemas.runs import utc_now


def scan_row(path: Path, source: str, run_id: str = "test-ingest", **extra) -> dict:
    """The `scans` row ingest would write for an accepted file: id, bytes, format, mode and size."""
    blob = Path(path).read_bytes()
    with Image.open(path) as img:
        fmt, mode, (width, height) = img.format, img.mode, img.size
    row = {"path": str(path), "source": source, "image_id": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
           "format": fmt, "mode": mode, "width": width, "height": height, "run_id": run_id,
           "ingested_at": utc_now()}  # fmt: skip
    return {**row, **extra}


def register_scans(root: Path, rows: list[dict], name: str) -> None:
    """Write the rows as one part and refresh the catalog's views."""
    write_part(root, "scans", rows, name=name)
    Catalog(root).refresh()

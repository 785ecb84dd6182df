"""A small lake written the way the stages write it (many small parts), and a full snapshot of it."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.catalog import Catalog
from catalogs.lake import table_layout, write_part
from schemas.tables import TABLES

DERIVED_VIEWS = ("scan_verdicts", "images", "latest_captions")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def scan_row(i: int, source: str = "s") -> dict:
    return {"path": f"/photos/{i:05d}.jpg", "source": source, "image_id": f"id{i % 37:04d}",
            "width": 1024 + i % 5, "height": 1024, "phash": (i * 2654435761) % 2**64,
            "sharpness": 0.3 + (i % 10) / 20, "noise_sigma": float(i % 7), "jpeg_quality": 90.0,
            "reason": "too_small" if i % 11 == 0 else None, "run_id": "r1", "ingested_at": T0}


def build_lake(root, n_parts: int = 24, rows_per_part: int = 5) -> Catalog:
    """Scans, IQA scores, captions and runs in many parts, decisions in one part named ``current``."""
    catalog = Catalog(root)
    catalog.update_settings(quality_reason_sql="CASE WHEN sharpness < 0.4 THEN 'low_quality:sharpness' END")
    for p in range(n_parts):
        ids = range(p * rows_per_part, (p + 1) * rows_per_part)
        write_part(root, "scans", [scan_row(i, f"src{p % 3}") for i in ids], name=f"scan-{p:03d}")
        write_part(root, "iqa_scores", [{"image_id": f"id{i % 37:04d}", "metric": m, "score": i / 7,
                                         "lower_better": False, "run_id": "r1", "created_at": T0}
                                        for i in ids for m in ("musiq", "clipiqa")], name=f"iqa-{p:03d}")
        if p % 2:
            write_part(root, "captions", [{"image_id": f"id{i % 37:04d}", "caption": f"a photo {i}",
                                           "model": "tiny", "created_at": T0 + timedelta(seconds=i)}
                                          for i in ids], name=f"cap-{p:03d}")
        catalog.record_run(f"run-{p:03d}", "ingest", {"p": p})
    # an older part without the newer nullable columns (views read parts by name)
    old = pa.table({"path": ["/photos/old.jpg"], "source": ["old"], "image_id": ["id-old"]})
    catalog.store.write_atomic("lake/scans/part-legacy.parquet", lambda fh: pq.write_table(old, fh))
    write_part(root, "decisions", [{"path": "/photos/00003.jpg", "source": "src0", "status": "rejected",
                                    "reason": "duplicate", "duplicate_of": "id0001"}], name="current")
    catalog.refresh()
    return catalog


def snapshot(catalog: Catalog) -> dict[str, list[dict]]:
    """Every view's full content, in a total order."""
    with catalog.reader() as con:  # the views as stored (no refresh), one connection
        return {v: con.sql(f"SELECT * FROM {v} ORDER BY ALL").to_arrow_table().to_pylist()
                for v in (*TABLES, *DERIVED_VIEWS)}


def files_read(catalog: Catalog, table: str) -> int:
    """How many Parquet files the table's view reads."""
    layout = table_layout(catalog.store, table)
    return len(layout.loose) + len(layout.manifest.parts)

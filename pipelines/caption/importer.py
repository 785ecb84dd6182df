"""`supir-data caption --from-file`: a user's own captions instead of a model's.

The file (.parquet or .jsonl) has a `caption` column and an `image_id` or `path` column (matched
against the catalog), optionally `model` and `prompt`. Imported captions are good captions (flag
NULL) with ``model`` = the file's value or 'imported'; re-importing the same file replaces its part.
"""

import hashlib
from pathlib import Path

import click
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from schemas.errors import ConfigError, InputImageError
from schemas.runs import new_run_id, utc_now


def import_captions(settings, file: str, echo=click.echo) -> dict:
    """Import a user's captions (.parquet or .jsonl; columns `caption` + `image_id` or `path`)."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    src = Path(file)
    try:
        table = pq.read_table(src) if src.suffix == ".parquet" else pajson.read_json(src)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputImageError(f"cannot read captions file {src}: {exc}") from exc
    key = "image_id" if "image_id" in table.column_names else "path" if "path" in table.column_names else None
    if "caption" not in table.column_names or key is None:
        raise ConfigError(
            f"{src}: needs a `caption` column and an `image_id` or `path` column; has {table.column_names}"
        )
    catalog = Catalog(settings.root)
    catalog.refresh()
    optional = [c if c in table.column_names else f"NULL AS {c}" for c in ("model", "prompt")]
    with catalog.reader() as con:
        con.register(
            "imported",
            table.select([key, "caption", *[c for c in ("model", "prompt") if c in table.column_names]]),
        )
        matched = (
            con.sql(
                f"""SELECT DISTINCT i.image_id, CAST(u.caption AS VARCHAR) AS caption, {", ".join(optional)}
                FROM imported u JOIN images i ON i.{key} = CAST(u.{key} AS VARCHAR) WHERE i.image_id IS NOT NULL
                ORDER BY 1, 2"""
            )
            .to_arrow_table()
            .to_pylist()
        )
    if not matched:
        raise InputImageError(
            f"{src}: none of its {len(table)} rows matches an image in the catalog by {key}"
        )
    run_id = new_run_id("caption-import")
    catalog.record_run(run_id, "caption-import", {"file": str(src.resolve())})
    now = utc_now()
    rows = [
        {
            "image_id": r["image_id"],
            "caption": (r["caption"] or "").strip(),
            "model": r["model"] or "imported",
            "prompt": r["prompt"] or "",
            "n_tokens": None,
            "flag": None if (r["caption"] or "").strip() else "empty",
            "run_id": run_id,
            "created_at": now,
        }
        for r in matched
    ]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:20]
    write_part(catalog.root, "captions", rows, name=f"import-{digest}")  # re-importing replaces
    catalog.refresh()
    unmatched = len(table) - len({r["image_id"] for r in matched})
    echo(f"imported {len(rows)} captions from {src}; {max(unmatched, 0)} rows matched no image")
    return {"imported": len(rows), "unmatched": max(unmatched, 0)}

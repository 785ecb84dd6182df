"""Bounded, deterministic samples of catalog rows for the report's thumbnails.

Each sample is one aggregate pass: ``min_by(row, hash(key), n)`` keeps the ``n`` rows with the smallest
hash of their key per group, a top-n inside DuckDB's hash aggregate. The same catalog gives the same
sample on every run, and a group of 20M rows costs no more Python than a group of 24.
"""

from pathlib import Path

from catalogs.catalog import Catalog
from schemas.tables import QUALITY_SIGNALS

ACCEPTED = "accepted"
_IMAGE_FIELDS = ("path", "image_id", "source", "width", "height", "format", "reason", "detail", "duplicate_of",
                 *QUALITY_SIGNALS)


def _struct(fields, prefix: str = "") -> str:
    return "{" + ", ".join(f"'{f}': {prefix}\"{f}\"" for f in fields) + "}"


def group_samples(catalog: Catalog, per_group: int) -> dict[str, dict]:
    """{'accepted' or reason: {'n': rows in the group, 'rows': up to ``per_group`` image rows}}."""
    sql = (
        f"SELECT coalesce(reason, '{ACCEPTED}') AS grp, count(*) AS n, "
        f"min_by({_struct(_IMAGE_FIELDS)}, hash(path), {int(per_group)}) AS rows FROM images GROUP BY grp"
    )
    out = {r["grp"]: {"n": r["n"], "rows": sorted(r["rows"], key=lambda x: x["path"])}
           for r in catalog.query(sql).to_pylist()}
    order = sorted(out, key=lambda g: (g != ACCEPTED, -out[g]["n"], g))
    return {g: out[g] for g in order}


def kept_copies(catalog: Catalog, image_ids: list[str]) -> dict[str, dict]:
    """image_id -> the accepted row holding it (the copy each duplicate points at)."""
    if not image_ids:
        return {}
    rows = catalog.query(
        f"SELECT {', '.join(_IMAGE_FIELDS)} FROM images WHERE status = 'accepted' "
        "AND image_id IN (SELECT unnest($1)) QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY path) = 1",
        [sorted(set(image_ids))],
    ).to_pylist()
    return {r["image_id"]: r for r in rows}


def duplicate_groups(catalog: Catalog, n_groups: int, per_group: int) -> tuple[int, list[dict]]:
    """(number of groups, a sample of them): {'kept': row or None, 'copies': rows, 'n_copies': int}.

    A group is every path whose `duplicate_of` names the same kept image_id (exact and near copies).
    """
    total = catalog.scalar("SELECT count(DISTINCT duplicate_of) FROM decisions WHERE duplicate_of IS NOT NULL") or 0
    groups = catalog.query(
        f"SELECT duplicate_of, count(*) AS n, min_by(path, hash(path), {int(per_group)}) AS paths FROM decisions "
        f"WHERE duplicate_of IS NOT NULL GROUP BY duplicate_of ORDER BY hash(duplicate_of) LIMIT {int(n_groups)}"
    ).to_pylist()
    paths = [p for g in groups for p in g["paths"]]
    copies = {}
    if paths:
        copies = {r["path"]: r for r in catalog.query(
            f"SELECT {', '.join(_IMAGE_FIELDS)} FROM images WHERE path IN (SELECT unnest($1))", [paths]
        ).to_pylist()}
    kept = kept_copies(catalog, [g["duplicate_of"] for g in groups])
    out = [{"kept": kept.get(g["duplicate_of"]), "kept_id": g["duplicate_of"], "n_copies": g["n"],
            "copies": [copies[p] for p in sorted(g["paths"]) if p in copies]} for g in groups]
    return total, out


def image_paths(catalog: Catalog, image_ids: list[str]) -> dict[str, str]:
    """image_id -> one path holding those bytes (the smallest), for thumbnails of derived rows."""
    if not image_ids:
        return {}
    rows = catalog.query(
        "SELECT image_id, min(path) AS path FROM scans WHERE image_id IN (SELECT unnest($1)) GROUP BY ALL",
        [sorted(set(image_ids))],
    ).to_pylist()
    return {r["image_id"]: r["path"] for r in rows}


def caption_examples(catalog: Catalog, n_good: int, n_per_flag: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """(good captions, {flag: flagged captions}) with the path of the captioned image."""
    fields = ("image_id", "caption", "model", "n_tokens", "flag")
    good = catalog.query(
        f"SELECT min_by({_struct(fields)}, hash(image_id, model), {int(n_good)}) AS rows FROM captions WHERE flag IS NULL"
    ).to_pylist()[0]["rows"] or []
    flagged = {r["flag"]: r["rows"] for r in catalog.query(
        f"SELECT flag, min_by({_struct(fields)}, hash(image_id, model), {int(n_per_flag)}) AS rows FROM captions "
        "WHERE flag IS NOT NULL GROUP BY flag ORDER BY flag"
    ).to_pylist()}
    paths = image_paths(catalog, [r["image_id"] for r in good + [x for rows in flagged.values() for x in rows]])
    for r in good + [x for rows in flagged.values() for x in rows]:
        r["path"] = paths.get(r["image_id"])
    return sorted(good, key=lambda r: r["image_id"]), flagged


def negative_examples(catalog: Catalog, n: int) -> list[dict]:
    """A sample of negative-quality samples, each with the path of the image it was made from."""
    fields = ("negative_id", "image_id", "path", "model", "prompt", "strength", "seed", "width", "height")
    rows = catalog.query(
        f"SELECT min_by({_struct(fields)}, hash(negative_id), {int(n)}) AS rows FROM negatives"
    ).to_pylist()[0]["rows"] or []
    sources = image_paths(catalog, [r["image_id"] for r in rows])
    for r in rows:
        r["source_path"] = sources.get(r["image_id"])
        r["path"] = r["path"] if "://" in r["path"] or Path(r["path"]).is_absolute() else str(catalog.root / r["path"])
    return sorted(rows, key=lambda r: r["negative_id"])

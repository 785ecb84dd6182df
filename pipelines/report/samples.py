"""Bounded, deterministic samples of catalog rows for the report's thumbnails.

A sample is one aggregate pass: ``min_by(key, hash(key), n)`` keeps the ``n`` keys with the smallest
hash per group, a top-n inside DuckDB's hash aggregate. The same catalog gives the same sample on every
run, and a group of 20M rows costs no more Python than a group of 24. Only keys (paths, ids) are
sampled; the rows behind them are fetched afterwards in one lookup for every section together.
"""

from pathlib import Path

from schemas.tables import QUALITY_SIGNALS

ACCEPTED = "accepted"
IMAGE_FIELDS = ("path", "image_id", "source", "width", "height", "format", "status", "reason", "detail",
                "duplicate_of", *QUALITY_SIGNALS)


def _struct(fields) -> str:
    return "{" + ", ".join(f"'{f}': \"{f}\"" for f in fields) + "}"


def _literal_list(values) -> str:
    """A SQL IN-list of string literals: DuckDB pushes it into the Parquet scan (a semi-join it does not)."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def group_paths(catalog, per_group: int) -> dict[str, dict]:
    """{'accepted' or reason: {'n': rows in the group, 'paths': up to ``per_group`` paths}}, accepted first."""
    rows = catalog.query(
        f"SELECT coalesce(reason, '{ACCEPTED}') AS grp, count(*) AS n, min_by(path, hash(path), {int(per_group)}) "
        "AS paths FROM images GROUP BY grp"
    ).to_pylist()
    out = {r["grp"]: {"n": r["n"], "paths": sorted(r["paths"])} for r in rows}
    return {g: out[g] for g in sorted(out, key=lambda g: (g != ACCEPTED, -out[g]["n"], g))}


def duplicate_groups(catalog, n_groups: int, per_group: int) -> tuple[int, list[dict]]:
    """(number of groups, a sample {'kept_id', 'n_copies', 'paths'}) from `decisions` alone (small).

    A group is every path whose `duplicate_of` names the same kept image_id (exact and near copies).
    """
    total = catalog.scalar("SELECT count(DISTINCT duplicate_of) FROM decisions WHERE duplicate_of IS NOT NULL") or 0
    groups = catalog.query(
        f"SELECT duplicate_of AS kept_id, count(*) AS n_copies, min_by(path, hash(path), {int(per_group)}) AS paths "
        f"FROM decisions WHERE duplicate_of IS NOT NULL GROUP BY duplicate_of ORDER BY hash(duplicate_of) "
        f"LIMIT {int(n_groups)}"
    ).to_pylist()
    return total, [{**g, "paths": sorted(g["paths"])} for g in groups]


def caption_examples(catalog, n_good: int, n_per_flag: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """(good captions, {flag: flagged captions}); ``path`` is filled in by :func:`attach_paths`."""
    fields = ("image_id", "caption", "model", "n_tokens", "flag")
    good = catalog.query(
        f"SELECT min_by({_struct(fields)}, hash(image_id, model), {int(n_good)}) AS rows FROM captions WHERE flag IS NULL"
    ).to_pylist()[0]["rows"] or []
    flagged = {r["flag"]: r["rows"] for r in catalog.query(
        f"SELECT flag, min_by({_struct(fields)}, hash(image_id, model), {int(n_per_flag)}) AS rows FROM captions "
        "WHERE flag IS NOT NULL GROUP BY flag ORDER BY flag"
    ).to_pylist()}
    return sorted(good, key=lambda r: r["image_id"]), flagged


def negative_examples(catalog, n: int) -> list[dict]:
    """A sample of negative-quality samples; paths relative to the data root are made absolute."""
    fields = ("negative_id", "image_id", "path", "model", "prompt", "strength", "seed", "width", "height")
    rows = catalog.query(
        f"SELECT min_by({_struct(fields)}, hash(negative_id), {int(n)}) AS rows FROM negatives"
    ).to_pylist()[0]["rows"] or []
    for r in rows:
        if "://" not in r["path"] and not Path(r["path"]).is_absolute():
            r["path"] = f"{str(catalog.root).rstrip('/')}/{r['path']}"
    return sorted(rows, key=lambda r: r["negative_id"])


def paths_of(catalog, image_ids) -> dict[str, list[str]]:
    """image_id -> every path holding those bytes (a columnar scan of `scans`, no verdicts)."""
    ids = sorted({i for i in image_ids if i})
    if not ids:
        return {}
    out: dict[str, list[str]] = {}
    for r in catalog.query(f"SELECT image_id, path FROM scans WHERE image_id IN ({_literal_list(ids)}) "
                           "ORDER BY path").to_pylist():
        out.setdefault(r["image_id"], []).append(r["path"])
    return out


def image_rows(catalog, paths) -> dict[str, dict]:
    """path -> its `images` row (IMAGE_FIELDS), for every sampled path of every section in one scan."""
    wanted = sorted({p for p in paths if p})
    if not wanted:
        return {}
    sql = f"SELECT {', '.join(IMAGE_FIELDS)} FROM images WHERE path IN ({_literal_list(wanted)})"
    return {r["path"]: r for r in catalog.query(sql).to_pylist()}

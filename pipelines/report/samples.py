"""Bounded, deterministic samples of catalog rows for the report's thumbnails.

A sample is one aggregate pass: ``min_by(key, hash(key), n)`` keeps the ``n`` keys with the smallest
hash per group, a top-n inside DuckDB's hash aggregate. The same catalog gives the same sample on every
run, and a group of 20M rows costs no more Python than a group of 24. Only keys (paths, ids) are
sampled; the rows behind them are fetched afterwards in one lookup for every section together.
"""

from pathlib import Path

from schemas.tables import QUALITY_SIGNALS

ACCEPTED = "accepted"
CANDIDATES = 4  # verdict-NULL candidates per accepted thumbnail: `decisions` rejects some of them
IMAGE_FIELDS = ("path", "image_id", "source", "width", "height", "format", "status", "reason", "detail",
                "duplicate_of", *QUALITY_SIGNALS)


def _struct(fields) -> str:
    return "{" + ", ".join(f"'{f}': \"{f}\"" for f in fields) + "}"


def group_paths(catalog, per_group: int, reasons: list[dict] | None = None, exact=None) -> dict[str, dict]:
    """{'accepted' or reason: {'n': rows in the group, 'paths': up to ``per_group`` paths}}, accepted first.

    The ``per_group`` paths of smallest ``hash(path)`` of each group, as one ``min_by`` over `images`
    would pick them, without that join over the whole catalog: scan verdicts come from the exact pass's
    candidates, `decisions` reasons from the small `decisions` table, and accepted paths are the verdict
    NULL candidates `decisions` did not reject (the pass keeps ``CANDIDATES`` times more of those; if
    too many of them were rejected, the accepted sample is taken from `images` after all).
    """
    if exact is None:
        from pipelines.report.aggregate import from_pass

        reasons, _, exact = from_pass(catalog, CANDIDATES * per_group)
    counts: dict[str, int] = {}
    for r in reasons:
        counts[r["reason"] or ACCEPTED] = counts.get(r["reason"] or ACCEPTED, 0) + r["n"]
    paths = {v: ps[:per_group] for v, ps in exact.candidates.items() if v is not None}
    for r in catalog.query(f"SELECT reason, min_by(path, hash(path), {int(per_group)}) AS paths FROM decisions "
                           "GROUP BY reason").to_pylist():
        paths[r["reason"]] = paths.get(r["reason"], []) + r["paths"]
    candidates = exact.candidates.get(None, [])
    decided = set(catalog.query("SELECT path FROM decisions WHERE path IN (SELECT unnest($1))",
                                [candidates]).column(0).to_pylist()) if candidates else set()
    accepted = [p for p in candidates if p not in decided][:per_group]
    if len(accepted) < min(per_group, counts.get(ACCEPTED, 0)):
        accepted = catalog.query(f"SELECT min_by(path, hash(path), {int(per_group)}) FROM images "
                                 "WHERE status = 'accepted'").column(0)[0].as_py() or []
    if accepted:
        paths[ACCEPTED] = accepted
    out = {g: {"n": counts.get(g, 0), "paths": sorted(ps)} for g, ps in paths.items() if counts.get(g)}
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
    """(good captions, {flag: flagged captions}), the smallest ``hash(image_id, model)`` first.

    ``ORDER BY .. LIMIT`` is a top-n that DuckDB answers by reading the key columns of every row and
    the caption text of the chosen few only (late materialization); ``path`` is filled in by `collect`.
    """
    fields = "image_id, caption, model, n_tokens, flag"
    good = catalog.query(f"SELECT {fields} FROM captions WHERE flag IS NULL ORDER BY hash(image_id, model), image_id, "
                         f"model LIMIT {int(n_good)}").to_pylist()
    flagged: dict[str, list[dict]] = {}
    for r in catalog.query(
        f"SELECT {fields} FROM captions WHERE flag IS NOT NULL QUALIFY row_number() OVER (PARTITION BY flag "
        f"ORDER BY hash(image_id, model), image_id, model) <= {int(n_per_flag)} ORDER BY flag, hash(image_id, model)"
    ).to_pylist():
        flagged.setdefault(r["flag"], []).append(r)
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


def lookup(catalog, paths, image_ids) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """(path -> its `images` row (IMAGE_FIELDS), image_id -> every path holding it), in one scan.

    One read of `scan_verdicts` finds both the sampled paths and the rows holding the wanted ids (kept
    copies, captioned and negative sources); the `decisions` part of each row comes from that small
    table, so there is no join over the whole catalog.
    """
    wanted, ids = sorted({p for p in paths if p}), sorted({i for i in image_ids if i})
    if not wanted and not ids:
        return {}, {}
    fields = ", ".join(f for f in IMAGE_FIELDS if f not in ("status", "reason", "duplicate_of"))
    # the verdict of `scan_verdicts`, judged above the semi-joins: for the matched rows, not for all 20M
    verdict = f"coalesce(reason, {catalog.settings().get('quality_reason_sql') or 'CAST(NULL AS VARCHAR)'})"
    found = catalog.query(f"SELECT {fields}, {verdict} AS verdict FROM (SELECT {fields}, reason FROM scans "
                          "WHERE path IN (SELECT unnest($1::VARCHAR[])) OR image_id IN (SELECT unnest($2::VARCHAR[]))) "
                          "ORDER BY path", [wanted, ids]).to_pylist()
    decided = {r["path"]: r for r in catalog.query(
        "SELECT path, reason, duplicate_of FROM decisions WHERE path IN (SELECT unnest($1))",
        [[r["path"] for r in found]]).to_pylist()} if found else {}
    rows, holders, wanted_ids = {}, {}, set(ids)
    for r in found:
        d = decided.get(r["path"], {})
        reason = r.pop("verdict") or d.get("reason")
        rows[r["path"]] = r | {"status": "rejected" if reason else "accepted", "reason": reason,
                               "duplicate_of": d.get("duplicate_of")}
        if r["image_id"] in wanted_ids:
            holders.setdefault(r["image_id"], []).append(r["path"])
    return rows, holders


def image_rows(catalog, paths) -> dict[str, dict]:
    """path -> its `images` row (IMAGE_FIELDS), for the given paths."""
    return lookup(catalog, paths, [])[0]

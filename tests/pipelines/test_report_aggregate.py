"""The report's aggregation queries agree with direct SQL counts (a synthetic lake, no Ray)."""

import numpy as np
import pytest

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from pipelines.ingest.quality import load_thresholds, quality_reason_sql, thresholds_to_dict
from pipelines.report import aggregate, samples
from schemas.runs import utc_now
from schemas.tables import QUALITY_SIGNALS

N = 3000


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Scans with random signals (some unmeasured), worker rejections, duplicates, captions and shards."""
    root = tmp_path_factory.mktemp("report-agg")
    rng = np.random.default_rng(0)
    scans = []
    for i in range(N):
        worker_reason = ["corrupt", "too_small", None, None, None, None][i % 6]
        row = {"path": f"/photos/{i:05d}.jpg", "source": ["div2k", "ffhq", "web"][i % 3],
               "image_id": f"id{i // 2 if i % 50 == 1 else i:05d}",  # a few exact copies share an id
               "width": 1024 + i % 7, "height": 1024, "reason": worker_reason, "phash": i}
        if worker_reason != "corrupt":
            row.update({"sharpness": float(rng.uniform(0.3, 0.7)), "noise_sigma": float(rng.exponential(4)),
                        "jpeg_quality": None if i % 4 == 0 else float(rng.integers(10, 100)),
                        "blockiness": float(rng.uniform(0.9, 1.4)), "colorfulness": float(rng.uniform(0, 90)),
                        "clipping": float(rng.uniform(0, 0.5)),
                        "edge_density": float("nan") if i % 9 == 0 else float(rng.uniform(0, 0.2))})
        if i % 50 in (0, 1):  # a kept copy and its duplicate pass every check (decisions only reject those)
            row.update({"sharpness": 0.6, "noise_sigma": 2.0, "jpeg_quality": 95.0, "blockiness": 1.0,
                        "colorfulness": 40.0, "clipping": 0.0, "edge_density": 0.1, "reason": None})
        scans.append(row)
    write_part(root, "scans", scans, name="scans")
    decisions = [{"path": r["path"], "source": r["source"], "status": "rejected",
                  "reason": "duplicate" if i % 2 else "near_duplicate", "duplicate_of": f"id{i - 1:05d}"}
                 for i, r in enumerate(scans) if i % 50 == 1]
    write_part(root, "decisions", decisions, name="current")
    write_part(root, "captions", [
        {"image_id": f"id{i:05d}", "caption": "a photo " * (i % 9 + 1), "model": "m", "prompt": "p",
         "n_tokens": i % 9 + 2, "flag": "repetitive" if i % 10 == 0 else None, "created_at": utc_now()}
        for i in range(0, 400)], name="captions")
    write_part(root, "shards", [
        {"shard": f"s-{i}.tar", "name": "mix", "split": "val" if i == 0 else "train", "path": f"/s/{i}.tar",
         "samples": 100 + i, "bytes": 10_000, "sha256": "x", "created_at": utc_now()} for i in range(5)], name="s")
    thresholds = load_thresholds()
    cat = Catalog(root)
    cat.update_settings(quality_thresholds=thresholds_to_dict(thresholds),
                        quality_reason_sql=quality_reason_sql(thresholds))
    cat.refresh()
    return cat


def test_counts_by_source_and_reason_equal_a_direct_count(catalog):
    direct = catalog.query("SELECT source, reason, count(*) AS n FROM images GROUP BY ALL").to_pylist()
    assert sorted(map(str, aggregate.reason_counts(catalog))) == sorted(map(str, sorted(
        direct, key=lambda r: (r["source"], -r["n"], str(r["reason"])))))
    assert sum(r["n"] for r in aggregate.reason_counts(catalog)) == N


def test_histograms_bin_every_measured_value_like_numpy(catalog):
    hists = {h.name: h for h in aggregate.signal_histograms(catalog)}
    assert set(hists) == set(QUALITY_SIGNALS)
    for name, h in hists.items():
        rows = catalog.query(f"SELECT {name} AS x, verdict FROM scan_verdicts WHERE {name} IS NOT NULL "
                             f"AND NOT isnan({name})").to_pylist()
        assert h.total == len(rows) > 0
        rejected_here = sum(r["verdict"] == f"low_quality:{name}" for r in rows)
        assert sum(h.counts.get(aggregate.REJECTED_HERE, [])) == rejected_here
        x = np.clip(np.array([r["x"] for r in rows]), h.lo, np.nextafter(h.hi, h.lo))
        expected, _ = np.histogram(x, bins=aggregate.HIST_BINS, range=(h.lo, h.hi))
        assert np.sum(list(h.counts.values()), axis=0).tolist() == expected.tolist()
        b = h.bound
        for v in (b.min, b.max):  # the threshold is inside the plotted range
            assert v is None or h.lo < v < h.hi
    assert hists["sharpness"].bound.min == load_thresholds().sharpness.min


def test_samples_are_bounded_deterministic_and_belong_to_their_group(catalog):
    groups = samples.group_samples(catalog, per_group=5)
    again = samples.group_samples(catalog, per_group=5)  # (rows hold NaN signals: compare the paths)
    assert {g: [r["path"] for r in v["rows"]] for g, v in groups.items()} == {
        g: [r["path"] for r in v["rows"]] for g, v in again.items()}
    direct = {r["g"]: r["n"] for r in catalog.query(
        "SELECT coalesce(reason, 'accepted') AS g, count(*) AS n FROM images GROUP BY ALL").to_pylist()}
    assert {g: v["n"] for g, v in groups.items()} == direct
    assert next(iter(groups)) == "accepted"
    for g, v in groups.items():
        assert len(v["rows"]) == min(5, v["n"])
        assert all((r["reason"] or "accepted") == g for r in v["rows"])


def test_duplicate_groups_point_at_the_accepted_kept_copy(catalog):
    total, groups = samples.duplicate_groups(catalog, n_groups=4, per_group=3)
    assert total == catalog.scalar("SELECT count(DISTINCT duplicate_of) FROM decisions")
    assert len(groups) == 4
    for g in groups:
        assert g["kept"]["image_id"] == g["kept_id"]
        assert catalog.scalar("SELECT status FROM images WHERE path = ?", [g["kept"]["path"]]) == "accepted"
        assert all(c["duplicate_of"] == g["kept_id"] for c in g["copies"])


def test_caption_and_shard_aggregates(catalog):
    stats = aggregate.caption_stats(catalog)
    assert stats["n"] == catalog.scalar("SELECT count(*) FROM captions WHERE flag IS NULL") == 360
    assert {r["flag"]: r["n"] for r in stats["by_flag"]} == {"ok": 360, "repetitive": 40}
    lengths = aggregate.caption_length_histogram(catalog)
    assert lengths.total == 360
    mix = {r["split"]: r for r in aggregate.shard_mix(catalog)}
    assert mix["val"]["samples"] == 100 and mix["train"]["samples"] == 101 + 102 + 103 + 104
    assert mix["train"]["shards"] == 4

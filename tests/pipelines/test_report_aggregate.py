"""The report's aggregation queries agree with direct SQL counts (a synthetic lake, no Ray)."""

import json

import numpy as np
import pytest

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from pipelines.ingest.quality import load_thresholds, quality_reason_sql, thresholds_to_dict
from pipelines.report import aggregate, samples
from pipelines.report.command import ReportOptions, collect
from pipelines.report.page import render
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
                        "edge_density": float("nan") if i % 9 == 0 else float(rng.uniform(0, 0.2)),
                        "flat_fraction": float(rng.uniform(0, 0.5))})
        if i % 50 in (0, 1):  # a kept copy and its duplicate pass every check (decisions only reject those)
            row.update({"sharpness": 0.6, "noise_sigma": 2.0, "jpeg_quality": 95.0, "blockiness": 1.0,
                        "colorfulness": 40.0, "clipping": 0.0, "edge_density": 0.1, "flat_fraction": 0.1,
                        "reason": None})
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
         "samples": 100 + i, "bytes": 10_000, "sha256": "x", "created_at": utc_now(),
         # the newest shard predates `sources_json`: its samples count as not recorded
         "sources_json": None if i == 4 else json.dumps({"div2k": 60 + i, "ffhq": 40 - i, "negatives": i})}
        for i in range(5)], name="s")
    thresholds = load_thresholds()
    cat = Catalog(root)
    cat.update_settings(quality_thresholds=thresholds_to_dict(thresholds),
                        quality_reason_sql=quality_reason_sql(thresholds))
    cat.refresh()
    return cat


def test_counts_by_source_and_reason_equal_a_direct_count(catalog):
    reasons, _ = aggregate.scan_aggregates(catalog)
    direct = catalog.query("SELECT source, reason, count(*) AS n FROM images GROUP BY ALL").to_pylist()
    key = lambda r: (r["source"], str(r["reason"]))  # noqa: E731
    assert sorted(reasons, key=key) == sorted(direct, key=key)
    assert sum(r["n"] for r in reasons) == N


def test_histograms_count_every_measured_value_by_verdict(catalog):
    _, hists = aggregate.scan_aggregates(catalog)
    hists = {h.name: h for h in hists}
    assert set(hists) == set(QUALITY_SIGNALS)
    for name, h in hists.items():
        rows = catalog.query(f"SELECT {name} AS x, verdict FROM scan_verdicts WHERE {name} IS NOT NULL "
                             f"AND NOT isnan({name})").to_pylist()
        assert h.total == len(rows) > 0
        assert sum(h.counts.get(aggregate.REJECTED_HERE, [])) == sum(r["verdict"] == f"low_quality:{name}" for r in rows)
        assert sum(h.counts.get(aggregate.PASSED, [])) == sum(r["verdict"] is None for r in rows)
        # every bar holds the values between its edges, to the fine-bin resolution (1/1000 of the range)
        x = np.array([r["x"] for r in rows])
        bars = np.sum(list(h.counts.values()), axis=0)
        fine = (x.max() - x.min()) / aggregate.FINE_BINS
        edges = h.edges()
        for i in range(aggregate.HIST_BINS):
            lo = -np.inf if i == 0 else edges[i]
            hi = np.inf if i == aggregate.HIST_BINS - 1 else edges[i + 1]
            assert ((x >= lo + fine) & (x < hi - fine)).sum() <= bars[i] <= ((x >= lo - fine) & (x < hi + fine)).sum()
        # the plotted range holds at least 99.8 % of the values, and the thresholds
        assert ((x >= h.lo) & (x <= h.hi)).mean() >= 0.998
        for v in (h.bound.min, h.bound.max):
            assert v is None or h.lo < v < h.hi
    assert hists["sharpness"].bound.min == load_thresholds().sharpness.min


def test_fine_counts_equal_numpy_histogram(catalog):
    fine = aggregate.fine_counts(catalog, "scans", ["sharpness"], "'all'")
    lo, hi, groups = fine["sharpness"]
    x = np.array(catalog.query("SELECT sharpness::DOUBLE FROM scans WHERE sharpness IS NOT NULL").column(0).to_pylist())
    assert (lo, hi) == (x.min(), x.max())
    expected, _ = np.histogram(x, bins=aggregate.FINE_BINS, range=(lo, hi))
    assert np.abs(np.array(groups["all"]) - expected).sum() <= 4  # values on a bin edge may round either way
    assert sum(groups["all"]) == len(x)


def test_samples_are_bounded_deterministic_and_belong_to_their_group(catalog):
    groups = samples.group_paths(catalog, per_group=5)
    assert groups == samples.group_paths(catalog, per_group=5)
    direct = {r["g"]: r["n"] for r in catalog.query(
        "SELECT coalesce(reason, 'accepted') AS g, count(*) AS n FROM images GROUP BY ALL").to_pylist()}
    assert {g: v["n"] for g, v in groups.items()} == direct
    assert next(iter(groups)) == "accepted"
    rows = samples.image_rows(catalog, [p for v in groups.values() for p in v["paths"]])
    for g, v in groups.items():
        assert len(v["paths"]) == min(5, v["n"])
        assert all((rows[p]["reason"] or "accepted") == g for p in v["paths"])


def test_collect_points_duplicates_at_the_accepted_kept_copy(catalog):
    data = collect(catalog, ReportOptions(per_group=4, duplicate_groups=5, per_duplicate_group=3))
    assert data.duplicate_total == catalog.scalar("SELECT count(DISTINCT duplicate_of) FROM decisions")
    assert len(data.duplicates) == 5
    for g in data.duplicates:
        assert g["kept"]["image_id"] == g["kept_id"] and g["kept"]["status"] == "accepted"
        assert g["copies"] and all(c["duplicate_of"] == g["kept_id"] for c in g["copies"])
    for row in data.groups["duplicate"]["rows"]:
        assert data.kept[row["duplicate_of"]]["image_id"] == row["duplicate_of"]
    assert sum(r["n"] for r in data.reasons) == N
    assert {r["path"] for r in data.captions} <= {f"/photos/{i:05d}.jpg" for i in range(N)}


def test_caption_and_shard_aggregates(catalog):
    stats, lengths = aggregate.caption_aggregates(catalog)
    assert stats["n"] == catalog.scalar("SELECT count(*) FROM captions WHERE flag IS NULL") == 360
    assert {r["flag"]: r["n"] for r in stats["by_flag"]} == {"ok": 360, "repetitive": 40}
    tokens = catalog.query("SELECT n_tokens FROM captions WHERE flag IS NULL").column(0).to_pylist()
    assert stats["mean"] == pytest.approx(np.mean(tokens), abs=0.01)
    assert stats["q"][1] == np.percentile(tokens, 50, method="inverted_cdf")
    assert lengths.total == 360
    mix = {r["split"]: r for r in aggregate.shard_mix(catalog)}
    assert mix["val"]["samples"] == 100 and mix["train"]["samples"] == 101 + 102 + 103 + 104
    assert mix["train"]["shards"] == 4


def test_shard_mix_per_split_and_source(catalog):
    mix = {(r["split"], r["source"]): r for r in aggregate.shard_sources(catalog)}
    assert {k: r["samples"] for k, r in mix.items()} == {
        ("val", "div2k"): 60, ("val", "ffhq"): 40, ("val", "negatives"): 0,
        ("train", "div2k"): 61 + 62 + 63, ("train", "ffhq"): 39 + 38 + 37, ("train", "negatives"): 1 + 2 + 3,
        ("train", aggregate.UNKNOWN_SOURCE): 104}
    for split in ("train", "val"):  # per-source samples add up to the split's samples, shares to 1
        mine = [r for (sp, _), r in mix.items() if sp == split]
        assert sum(r["samples"] for r in mine) == {r["split"]: r for r in aggregate.shard_mix(catalog)}[split]["samples"]
        assert sum(r["share"] for r in mine) == pytest.approx(1.0)
    page = render(collect(catalog))
    assert "mix: samples per source and split" in page
    assert f"{61 + 62 + 63} ({(61 + 62 + 63) / (4 * 100 + 10):.1%})" in page


def test_a_catalog_never_ingested_into_reports_zeros(tmp_path):
    from pipelines.report.command import build_report

    path, data = build_report(Catalog(tmp_path), tmp_path / "r.html")
    assert data.reasons == [] and data.histograms == [] and data.groups == {}
    assert "No captions yet" in path.read_text()

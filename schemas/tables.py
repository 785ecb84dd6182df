"""One pyarrow schema per lake table: the contract between workers (who write parts) and the catalog.

Bump ``SCHEMA_VERSION`` when a column changes meaning; adding a nullable column is compatible
(views read parts with ``union_by_name``).
"""

import pyarrow as pa

SCHEMA_VERSION = 1

# Cheap quality signals measured by `ingest` on a reduced-size decode (see pipelines/ingest/quality.py).
QUALITY_SIGNALS = (
    "sharpness",  # the weaker of two fine-octave detail ratios (Laplacian RMS, strongest edges)
    "noise_sigma",  # Gaussian noise sigma on 0..255 luma at full resolution, in the flattest blocks
    "jpeg_quality",  # IJG quality estimated from the quantisation tables (NULL when not JPEG)
    "blockiness",  # 8x8 grid gradient ratio (1 = no blocking)
    "colorfulness",  # Hasler & Suesstrunk colourfulness
    "clipping",  # fraction of luma pixels at the extremes (<=2 or >=253)
    "edge_density",  # fraction of pixels on strong edges (texture richness)
    "flat_fraction",  # fraction of 16x16 analysis blocks without any noise or texture (flat synthetic art)
)

_ts = pa.timestamp("us", tz="UTC")

# `scans`: one row per input path, written by ingest workers. `reason` holds the rejections a worker
# can decide alone (corrupt, truncated, unsupported, too_small, too_large, low_quality:<signal>).
SCANS = pa.schema(
    [
        ("path", pa.string()),
        ("source", pa.string()),
        ("image_id", pa.string()),  # hex SHA-256 of the bytes; NULL when the file cannot be read
        ("bytes", pa.int64()),
        ("format", pa.string()),
        ("mode", pa.string()),  # original PIL mode, before conversion to 8-bit RGB
        ("width", pa.int32()),  # after EXIF orientation
        ("height", pa.int32()),
        ("phash", pa.uint64()),  # 64-bit DCT perceptual hash
        *[(name, pa.float32()) for name in QUALITY_SIGNALS],
        ("reason", pa.string()),
        ("detail", pa.string()),  # human-readable detail of the rejection (decoder message...)
        ("config_hash", pa.string()),
        ("run_id", pa.string()),
        ("ingested_at", _ts),
    ]
)

# `iqa_scores`: pyiqa model metrics, long format (one row per image and metric).
IQA_SCORES = pa.schema(
    [
        ("image_id", pa.string()),
        ("metric", pa.string()),
        ("score", pa.float32()),
        ("lower_better", pa.bool_()),
        ("run_id", pa.string()),
        ("created_at", _ts),
    ]
)

# `decisions`: the final verdict per path, kept up to date by the ingest driver after every run
# (dedup is global, so it cannot be decided by a worker; a top-up re-decides only the duplicate groups
# its new rows touch). One part, replaced atomically; `run_id` is the run that made the decision.
DECISIONS = pa.schema(
    [
        ("path", pa.string()),
        ("source", pa.string()),  # copied from scans so `status` needs no join
        ("status", pa.string()),  # 'accepted' | 'rejected'
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),  # image_id of the copy that was kept
        ("run_id", pa.string()),
    ]
)

CAPTIONS = pa.schema(
    [
        ("image_id", pa.string()),
        ("caption", pa.string()),
        ("model", pa.string()),
        ("prompt", pa.string()),
        ("n_tokens", pa.int32()),
        ("flag", pa.string()),  # NULL for a good caption; 'empty' | 'repetitive' | 'imported' ...
        ("run_id", pa.string()),
        ("created_at", _ts),
    ]
)

NEGATIVES_DIR = "negatives"  # <root>/negatives/<id[:2]>/<id>.png: the negatives stage's images

NEGATIVES = pa.schema(
    [
        ("negative_id", pa.string()),  # hex SHA-256 of the output file's bytes
        ("image_id", pa.string()),  # the source image
        ("path", pa.string()),  # absolute path or URL; relative ones are relative to the data root
        ("prompt", pa.string()),
        ("strength", pa.float32()),
        ("steps", pa.int32()),
        ("guidance", pa.float32()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("run_id", pa.string()),
        ("created_at", _ts),
    ]
)

SHARDS = pa.schema(
    [
        ("shard", pa.string()),
        ("name", pa.string()),
        ("split", pa.string()),
        ("path", pa.string()),
        ("samples", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("run_id", pa.string()),
        ("created_at", _ts),
        ("plan_digest", pa.string()),  # hash of what the shard should hold: `shard` skips a shard that matches
        ("sources_json", pa.string()),  # {source: samples written} ("negatives" for negative samples)
    ]
)

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("stage", pa.string()),
        ("config_json", pa.string()),
        ("config_hash", pa.string()),
        ("started_at", _ts),
    ]
)

# `failures`: items a stage could not turn into a row of its own table (negatives of an unreadable
# source...), with the reason code and the exception text; written by the engine.
FAILURES = pa.schema(
    [
        ("stage", pa.string()),
        ("key", pa.string()),  # the item's name in its stage (a path, an image id, a shard)
        ("reason", pa.string()),  # the stage's code, or the engine's: crashed | timeout | corrupt | error
        ("detail", pa.string()),
        ("run_id", pa.string()),
        ("created_at", _ts),
    ]
)

# `stage_runs`: one row per stage run (datatrove's per-task stats, img2dataset's _stats.json).
STAGE_RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("stage", pa.string()),
        ("items", pa.int64()),  # pending items the run was given
        ("rows", pa.int64()),  # rows it wrote
        ("outcomes_json", pa.string()),  # {outcome or reason: count}
        ("seconds", pa.float64()),
        ("started_at", _ts),
        ("finished_at", _ts),
    ]
)

# `eval_results`: `supir-data eval`, long format: one row per image × degradation × method × metric
# (written under the eval's --out folder, not the data root). A metric that could not be computed
# has a NULL value and says why in `detail` ("missing: put FILE at PATH").
EVAL_RESULTS = pa.schema(
    [
        ("image", pa.string()),  # the input's name (relative path without suffix)
        ("degradation", pa.string()),  # a Table 1 preset (sr4, ...) or "real"
        ("method", pa.string()),  # "bicubic" or a checkpoint's name
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("lower_better", pa.bool_()),
        ("detail", pa.string()),
        ("output", pa.string()),  # the restored image, relative to --out
        ("run_id", pa.string()),
        ("created_at", _ts),
    ]
)

# Columns that hold sizes or counts: a negative value there is a broken input, not a measurement.
NON_NEGATIVE = frozenset({"bytes", "width", "height", "samples", "n_tokens", "steps", "items", "rows"})

# Every lake table; the catalog makes one view per entry (typed and empty until a part exists).
TABLES: dict[str, pa.Schema] = {
    "scans": SCANS,
    "iqa_scores": IQA_SCORES,
    "decisions": DECISIONS,
    "captions": CAPTIONS,
    "negatives": NEGATIVES,
    "shards": SHARDS,
    "runs": RUNS,
    "failures": FAILURES,
    "stage_runs": STAGE_RUNS,
    "eval_results": EVAL_RESULTS,
}

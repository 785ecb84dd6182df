#!/usr/bin/env bash
# `make demo`: the whole data engine on a corpus it builds itself, offline, on CPU.
#   1. a corpus of real photos (scikit-image's samples, upscaled to 1024+ px), degraded copies and
#      broken files;  2. ingest;  3. tiny random LLaVA/SDXL models (outputs are nonsense by design);
#   4. caption;  5. negatives;  6. shards + verify;  7. the catalog summary;  8. the HTML report.
set -euo pipefail
ROOT=${1:-demo}
PY=${PY:-.venv/bin/python}
sd() { "$PY" -m pipelines --root "$ROOT" --num-cpus "${DEMO_CPUS:-2}" "$@"; }
has() { "$PY" -m pipelines --help | grep -qE "^  $1 "; }

mkdir -p "$ROOT"
echo "== corpus: $ROOT/corpus"
sd make-demo-corpus "$ROOT/corpus"

echo "== ingest"
sd ingest "$ROOT/corpus" --source demo

if has make-tiny-models; then
  echo "== tiny models (random weights: their captions and images are nonsense by design)"
  [ -d "$ROOT/models/llava" ] || sd make-tiny-models "$ROOT/models"
fi
if has caption; then
  echo "== caption"
  sd caption --model "$ROOT/models/llava" --batch-size 4 --max-new-tokens 16
fi
if has negatives; then
  echo "== negatives"
  sd negatives --model "$ROOT/models/sdxl" --count 4 --steps 4 --resolution 512
fi
if has shard; then
  echo "== shard"
  sd shard --name demo --gt-size 512 --lq precomputed --val-fraction 0.1
  sd verify --name demo
fi

echo "== catalog"
sd status
sd query "SELECT status, coalesce(reason, '-') AS reason, count(*) AS n FROM images GROUP BY ALL ORDER BY n DESC"

if has report; then
  echo "== report"
  sd report --out "$ROOT/report.html"
  echo "report: $(cd "$(dirname "$ROOT/report.html")" && pwd)/report.html"
fi

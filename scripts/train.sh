#!/usr/bin/env bash
# `make train [CONFIG=supir/configs/tiny.yaml] [ARGS="steps=50 optim.lr=1e-4"]`
# The tiny config trains on CPU on the shards of the demo pipeline (`make demo`), running that
# pipeline first when its shards are missing.
# Several GPUs: NPROC=8 make train CONFIG=supir/configs/sdxl.yaml   (runs torchrun)
set -euo pipefail
CONFIG=${1:-supir/configs/tiny.yaml}
shift || true
PY=${PY:-.venv/bin/python}
NPROC=${NPROC:-1}
EXTRA=()

if [[ "$CONFIG" == *tiny.yaml ]]; then
  DEMO_ROOT=${DEMO_ROOT:-demo}
  DEMO_MANIFEST=$DEMO_ROOT/shards/demo.manifest.json
  if [ ! -f "$DEMO_MANIFEST" ]; then
    echo "== no demo shards yet ($DEMO_MANIFEST): running the demo pipeline first (make demo)"
    bash scripts/demo.sh "$DEMO_ROOT"
  fi
  echo "== training on the demo pipeline's shards: $DEMO_MANIFEST"
  EXTRA+=("data.shards=$DEMO_MANIFEST" "data.val_shards=null")
fi

if [ "$NPROC" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m supir.train \
    --config "$CONFIG" "${EXTRA[@]}" ${ARGS:-} "$@"
fi
exec "$PY" -m supir.train --config "$CONFIG" "${EXTRA[@]}" ${ARGS:-} "$@"

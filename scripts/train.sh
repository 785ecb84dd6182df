#!/usr/bin/env bash
# `make train [CONFIG=supir/configs/tiny.yaml] [ARGS="steps=50 optim.lr=1e-4"]`
# The tiny config trains on the demo shards on CPU: it uses `make demo`'s shards when they exist,
# else builds a few shards of scikit-image photos itself (scripts/make_train_demo_shards.py).
# Several GPUs: NPROC=8 make train CONFIG=supir/configs/sdxl.yaml   (runs torchrun)
set -euo pipefail
CONFIG=${1:-supir/configs/tiny.yaml}
shift || true
PY=${PY:-.venv/bin/python}
NPROC=${NPROC:-1}
EXTRA=()

if [[ "$CONFIG" == *tiny.yaml ]]; then
  DEMO_MANIFEST=${DEMO_ROOT:-demo}/shards/demo.manifest.json
  if [ -f "$DEMO_MANIFEST" ]; then
    echo "== training on the demo pipeline's shards: $DEMO_MANIFEST"
    EXTRA+=("data.shards=$DEMO_MANIFEST" "data.val_shards=null")
  else
    if [ ! -f demo/train-shards/supir-val-000000.tar ]; then
      echo "== no demo shards ($DEMO_MANIFEST); building a few from scikit-image photos"
      "$PY" scripts/make_train_demo_shards.py demo/train-shards
    fi
    echo "== training on demo/train-shards (run \`make demo\` first to train on the data engine's shards)"
  fi
fi

if [ "$NPROC" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m supir.train \
    --config "$CONFIG" "${EXTRA[@]}" ${ARGS:-} "$@"
fi
exec "$PY" -m supir.train --config "$CONFIG" "${EXTRA[@]}" ${ARGS:-} "$@"

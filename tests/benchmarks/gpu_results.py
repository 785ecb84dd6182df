"""The last GPU measurements (scripts/gpu_check.py on a lent GPU, results/gpu_check*.json), for the
CPU benchmarks to carry into their own result files when the machine running them has no GPU."""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FILES = ("gpu_check.json", "gpu_check_large_batches.json", "gpu_check_ddp.json")


def last_gpu_check(*sections: str) -> dict:
    """{file: {recorded, machine, command, <section>: ...}} for the files that hold these sections."""
    out = {}
    for name in FILES:
        path = RESULTS / name
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        found = {s: record[s] for s in sections if s in record}
        if found:
            out[name] = {k: record.get(k) for k in ("recorded", "machine", "command")} | found
    return out

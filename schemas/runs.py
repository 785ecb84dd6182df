"""Run identity: run ids, config hashes, timestamps, per-sample seeds."""

import datetime as dt
import hashlib
import json
import uuid


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id(stage: str) -> str:
    return f"{stage}-{utc_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def derive_seed(global_seed: int, key: str) -> int:
    """A 63-bit seed from (global seed, sample key): independent of worker count and order."""
    digest = hashlib.sha256(f"{int(global_seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

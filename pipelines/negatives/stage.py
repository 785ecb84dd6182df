"""The negatives stage: planned slots (source image, seed) → SDEdit PNGs + `negatives` rows.

Decoding runs in CPU tasks ahead of the SDXL actors; a source that cannot be used writes no
negative and is recorded in `failures` (its slot is planned again by the next run).
"""

import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from pipelines.engine.actors import load_rgb, part_name
from pipelines.engine.models import pick_device
from pipelines.engine.stage import Stage
from pipelines.negatives.sdedit import (
    NegativeConfig,
    fit_source,
    load_sdedit_pipeline,
    png_bytes,
    save_negative,
    sdedit,
    size_multiple,
)
from schemas.errors import InputImageError
from schemas.runs import derive_seed, utc_now

SLOTS = pa.schema(
    [("image_id", pa.string()), ("path", pa.string()), ("source", pa.string()), ("seed", pa.int64())]
)


class NegativeStage(Stage):
    name = "negatives"
    table = "negatives"
    batched = True
    uses_actors = True
    limit_memory = False
    error_reason = "unreadable"

    def __init__(self, cfg: NegativeConfig, root: str, run_id: str, model_id: str, torch_threads: int,
                 batch_size: int):
        self.cfg, self.root_dir, self.run_id, self.model_id = cfg, root, run_id, model_id
        self.torch_threads, self.batch_size = torch_threads, batch_size

    def key(self, item: dict) -> str:
        return f"{item['image_id']}:{item['seed']}"

    def setup(self) -> None:
        import torch

        torch.backends.cudnn.benchmark = False  # autotuned kernels may differ run to run
        torch.backends.cudnn.deterministic = True
        self.pipe = load_sdedit_pipeline(self.cfg, pick_device(self.torch_threads))
        self.multiple = size_multiple(self.pipe)

    def prepare(self, item: dict) -> dict:
        return {**item, "image": np.asarray(load_rgb(str(item["path"]), self.cfg.resolution), dtype=np.uint8)}

    def process(self, items: list[dict]) -> list[dict]:
        from PIL import Image

        sources = [fit_source(Image.fromarray(i["image"]), self.cfg.resolution, self.multiple) for i in items]
        outputs = sdedit(self.pipe, sources, [int(i["seed"]) for i in items], self.cfg)
        rows, now = [], utc_now()
        for item, img in zip(items, outputs):
            negative_id, path = save_negative(self.root_dir, png_bytes(img))
            rows.append({
                "negative_id": negative_id, "image_id": str(item["image_id"]), "path": str(path),
                "prompt": self.cfg.prompt, "strength": self.cfg.strength, "steps": self.cfg.steps,
                "guidance": self.cfg.guidance, "seed": int(item["seed"]), "model": self.model_id,
                "width": img.width, "height": img.height, "run_id": self.run_id, "created_at": now,
            })  # fmt: skip
        return rows

    def outcome(self, row: dict | None) -> str:
        return "made"

    def part_name(self, items: list[dict]) -> str:
        return part_name(f"neg-{self.run_id}", [self.key(i) for i in items])


PLAN_SQL = """
WITH accepted AS (
    SELECT image_id, min(path) AS path, min(source) AS source FROM images
    WHERE status = 'accepted' AND image_id IS NOT NULL GROUP BY image_id),
ranked AS (
    SELECT *, md5(CAST(? AS VARCHAR) || ':' || image_id) AS h FROM accepted),
quantiled AS (
    SELECT *, (row_number() OVER (PARTITION BY source ORDER BY h) - 0.5)
              / count(*) OVER (PARTITION BY source) AS q FROM ranked)
SELECT image_id, path, source FROM quantiled ORDER BY q, h LIMIT ?"""


def plan_slots(catalog: Catalog, seed: int, count: int) -> pa.Table:
    """The first missing slots (image_id, path, source, seed) needed to bring the table to ``count``."""
    existing = catalog.query("SELECT image_id, seed FROM negatives")
    have = set(zip(existing.column("image_id").to_pylist(), existing.column("seed").to_pylist()))
    need = count - len(existing)
    if need <= 0:
        return SLOTS.empty_table()
    plan = catalog.query(PLAN_SQL, [str(seed), count + len(existing)]).to_pylist()
    if not plan:
        raise InputImageError("no accepted images to make negatives from: run `supir-data ingest` first")
    slots, i = [], 0
    while len(slots) < need:  # ends: at most len(have) slots are skipped
        src = plan[i % len(plan)]
        slot_seed = derive_seed(seed, f"{src['image_id']}:{i // len(plan)}")
        if (src["image_id"], slot_seed) not in have:
            slots.append({**src, "seed": slot_seed})
        i += 1
    return pa.Table.from_pylist(slots, schema=SLOTS)

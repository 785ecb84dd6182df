"""The caption stage: accepted images without a caption row for (model, prompt) → `captions` rows.

Decoding runs in CPU tasks ahead of the model actors (at the processor's resolution, so the model
never waits on it); one actor holds one captioning model. Degenerate generations are stored with a
``flag`` ('empty' | 'repetitive'), as are images that cannot be used ('unreadable', or the engine's
'crashed' | 'timeout'), and are not retried by default: greedy decoding would repeat them exactly.
"""

import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from pipelines.caption.model import (
    CaptionConfig,
    Generation,
    auto_batch_size,
    caption_images,
    load_captioner,
    model_key,
)
from pipelines.engine.actors import load_rgb, part_name
from pipelines.engine.models import pick_device
from pipelines.engine.stage import Stage
from schemas.runs import utc_now


class CaptionStage(Stage):
    name = "caption"
    table = "captions"
    batched = True
    uses_actors = True
    limit_memory = False
    error_reason = "unreadable"

    def __init__(self, cfg: CaptionConfig, run_id: str, min_side: int | None = None, torch_threads: int = 1,
                 batch_size: int = 0):
        self.cfg, self.run_id, self.min_side = cfg, run_id, min_side
        self.torch_threads, self.batch_size = torch_threads, batch_size
        self.model_id = model_key(cfg.model)

    def key(self, item: dict) -> str:
        return str(item["image_id"])

    def setup(self) -> None:
        self.model, self.processor = load_captioner(self.cfg, pick_device(self.torch_threads))
        if not self.batch_size:  # --batch-size 0: from this actor's free GPU memory
            self.batch_size = auto_batch_size(self.model, self.processor, self.cfg)

    def prepare(self, item: dict) -> dict:
        return {**item, "image": np.asarray(load_rgb(str(item["path"]), self.min_side), dtype=np.uint8)}

    def process(self, items: list[dict]) -> list[dict]:
        from PIL import Image

        images = [Image.fromarray(item["image"]) for item in items]
        generations = caption_images(self.model, self.processor, images, self.cfg)
        return [self._row(item, g) for item, g in zip(items, generations)]

    def failure_row(self, item: dict, reason: str, detail: str) -> dict:
        return self._row(item, Generation(caption="", n_tokens=0, flag=reason))

    def _row(self, item: dict, g: Generation) -> dict:
        return {"image_id": str(item["image_id"]), "caption": g.caption, "model": self.model_id,
                "prompt": self.cfg.prompt, "n_tokens": g.n_tokens, "flag": g.flag, "run_id": self.run_id,
                "created_at": utc_now()}  # fmt: skip

    def outcome(self, row: dict | None) -> str:
        return (row or {}).get("flag") or "captioned"

    def part_name(self, items: list[dict]) -> str:
        # Named by run and batch: a job the engine retries replaces its part; another run never collides.
        return part_name(f"cap-{self.run_id}", [self.key(i) for i in items])


PENDING_SQL = """
SELECT i.image_id, min(i.path) AS path FROM images i
WHERE i.status = 'accepted' AND i.image_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM captions c WHERE c.image_id = i.image_id AND c.model = ?
                  AND c.prompt = ? {retry_clause})
  {uncaptioned_clause}
GROUP BY i.image_id ORDER BY i.image_id"""


def pending_images(
    catalog: Catalog,
    model: str,
    prompt: str,
    limit: int | None = None,
    retry_flagged=False,
    only_uncaptioned=False,
) -> pa.Table:
    """Accepted images with no caption row for (model, prompt): the anti-join that makes runs resumable."""
    sql = PENDING_SQL.format(
        retry_clause="AND c.flag IS NULL" if retry_flagged else "",
        uncaptioned_clause=(
            "AND NOT EXISTS (SELECT 1 FROM latest_captions l WHERE l.image_id = i.image_id)"
            if only_uncaptioned
            else ""
        ),
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return catalog.query(sql, [model, prompt])

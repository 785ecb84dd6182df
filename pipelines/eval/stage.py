"""The eval stage: (method, image, degradation) items → results + `eval_results` rows.

One stage run on the engine's actor pool (one GPU per actor). Items come grouped by method, and an
actor holds one method's model at a time, loading the next when its items begin: every actor loads
each checkpoint once, and never two at once (a 24 GB GPU holds one SUPIR). ``prepare`` (CPU tasks
ahead of the actors) applies the protocol to the input and the Table 1 degradation to the GT crop;
both are deterministic, so every method's item rebuilds the very same LQ and the files are written
once. ``process`` restores, saves the result and scores it: one row per metric, a missing metric
included (NULL value, ``missing: put FILE at PATH`` in `detail`). Parts are named after their items,
so a killed eval resumes with the items that have no row yet and never duplicates one.

Files under ``--out`` (paths in rows are relative to it): ``inputs/gt/<image>.png``,
``inputs/<degradation>/<image>.png`` (``.jpg`` for the JPEG preset: the very JPEG, tables and all),
``outputs/<method>/<degradation>/<image>.png``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.engine.stage import Stage
from schemas.runs import derive_seed, utc_now
from supir.eval_metrics import LOWER_BETTER, Conventions
from supir.eval_protocol import DEGRADATIONS, REAL, degrade, protocol_crop
from supir.eval_restore import Method


@dataclass(frozen=True)
class EvalJob:
    """What every method's run shares (the part of the command line that decides the numbers)."""

    out: str
    size: int = 1024  # protocol crop side
    seed: int = 0
    metrics: tuple[str, ...] = ()
    conventions: Conventions = field(default_factory=Conventions)
    weights_dir: str | None = None
    dtype: str = "auto"
    torch_hub: str | None = None  # the driver's torch hub folder: actors look for LPIPS weights there too


def gt_file(image: str) -> str:
    return f"inputs/gt/{image}.png"


def lq_file(image: str, degradation: str) -> str:
    jpeg = degradation in DEGRADATIONS and DEGRADATIONS[degradation].jpeg_quality is not None
    return f"inputs/{degradation}/{image}.{'jpg' if jpeg else 'png'}"


def output_file(method: str, image: str, degradation: str) -> str:
    return f"outputs/{method}/{degradation}/{image}.png"


def _write_once(path: Path, data: bytes) -> None:
    """Atomic (temp name, rename); a file already there was written from the same deterministic input."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png(rgb: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def prepare_inputs(job: EvalJob, item: dict) -> dict:
    """Protocol crop of the input, its Table 1 LQ (or, real mode, the crop is the LQ); files written once."""
    from pipelines.eval.inputs import load_input

    image, name = item["image"], item["degradation"]
    crop, back = protocol_crop(load_input(str(item["path"])), job.size)
    rgb = np.asarray(crop)
    out = Path(job.out)
    if name == REAL:
        _write_once(out / lq_file(image, name), _png(rgb))
        return {**item, "lq": rgb, "gt": None, "out_size": back}
    lq, jpeg = degrade(DEGRADATIONS[name], rgb, job.seed, image)
    _write_once(out / gt_file(image), _png(rgb))
    _write_once(out / lq_file(image, name), jpeg if jpeg is not None else _png(lq))
    return {**item, "lq": lq, "gt": rgb, "out_size": (job.size, job.size)}


class EvalStage(Stage):
    name = "eval"
    table = "eval_results"
    batched = True
    uses_actors = True
    limit_memory = False
    batch_size = 1  # one image per sampler call: results must not depend on batching

    def __init__(self, methods: list[Method], job: EvalJob, run_id: str, torch_threads: int):
        self.methods = {m.name: m for m in methods}
        self.job, self.run_id, self.torch_threads = job, run_id, torch_threads

    def key(self, item: dict) -> str:
        return f"{item['method']}:{item['degradation']}:{item['image']}"

    def setup(self) -> None:
        from pipelines.engine.models import pick_device, torch_dtype
        from supir.eval_metrics import Scorer

        if self.job.torch_hub:
            import torch

            torch.hub.set_dir(self.job.torch_hub)
        self.device = pick_device(self.torch_threads)
        self.dtype = torch_dtype(self.job.dtype, self.device)
        self.restorer = None
        self.scorer = Scorer(list(self.job.metrics), self.device, self.job.conventions, self.job.weights_dir)

    def prepare(self, item: dict) -> dict:
        return prepare_inputs(self.job, item)

    def _restorer(self, name: str):
        """The method's restorer; the previous method's model is freed first."""
        from supir.eval_restore import Restorer

        if self.restorer is None or self.restorer.method.name != name:
            self.restorer = None
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
            self.restorer = Restorer(self.methods[name], self.device, self.dtype, self.job.size)
        return self.restorer

    def process(self, items: list[dict]) -> list[list[dict]]:
        rows = []
        for item in items:
            seed = derive_seed(self.job.seed, f"{item['image']}:{item['degradation']}:sample")
            result = self._restorer(item["method"])(item["lq"], tuple(item["out_size"]), seed)
            rel = output_file(item["method"], item["image"], item["degradation"])
            path = Path(self.job.out) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(_png(result))
            os.replace(tmp, path)
            now = utc_now()
            rows.append([
                {"image": item["image"], "degradation": item["degradation"], "method": item["method"],
                 "metric": metric, "value": value, "lower_better": metric in LOWER_BETTER, "detail": note,
                 "output": rel, "run_id": self.run_id, "created_at": now}
                for metric, (value, note) in self.scorer.score(result, item["gt"]).items()
            ])  # fmt: skip
        return rows

    def outcome(self, row: dict | None) -> str:
        return "missing" if row is not None and row.get("value") is None else "scored"

    def part_name(self, items: list[dict]) -> str:
        from pipelines.engine.actors import part_name

        return part_name("eval", [self.key(i) for i in items])

"""Trainer throughput (issue 6): tiny-config steps/s on CPU and the reader's share of step time.

Measured on the shards `make train` builds (scikit-image photos, 512² GT + precomputed LQ) with the
tiny config (batch 4, 512 crops resized to 64, tiny random SDXL):
  - reader alone: seconds per batch of supir.reader (decode GT + LQ, crop, prompt, collate);
  - model alone: seconds per optimisation step on batches already in memory;
  - end to end: seconds per step of `supir.train.train` reading the shards (num_workers 0: the reader
    runs inline, so its share is the fraction of the step it costs; workers would overlap it).
Also records the meta-device parameter counts of the real SDXL-size model. GPU numbers (real SDXL
config, bf16, batch 1/4/8, sampler at 1024²; tests/benchmarks/train_gpu.py) only when a GPU is present.
Results: tests/benchmarks/results/train.json.
"""

import importlib.util
import itertools
import json
import os
import platform
import time
from pathlib import Path

import torch

from supir.model import parameter_counts
from supir.reader import ReaderConfig, make_loader
from supir.tiny_sdxl import build_tiny_sdxl
from supir.train import train, training_loss
from supir.train_config import load_config

RESULTS = Path(__file__).parent / "results" / "train.json"
ROOT = Path(__file__).resolve().parents[2]
STEPS = int(os.environ.get("SUPIR_BENCH_TRAIN_STEPS", 12))


def _build_shards(out: Path) -> str:
    spec = importlib.util.spec_from_file_location("shards", ROOT / "scripts" / "make_train_demo_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(str(out))
    return str(out / "supir-train-{000000..000001}.tar")


def test_bench_train(tmp_path):
    _bench(tmp_path)


def _bench(tmp_path):
    shards = _build_shards(tmp_path / "shards")
    sdxl = build_tiny_sdxl(tmp_path / "sdxl")
    overrides = [
        f"model.pretrained={sdxl}",
        f"data.shards={shards}",
        "data.val_shards=null",
        "val.every=0",
        f"output_dir={tmp_path}/run",
        "checkpoint_every=0",
        f"log_every={STEPS}",
        "resume=null",
    ]
    config = load_config(ROOT / "supir" / "configs" / "tiny.yaml", overrides)
    d = config.data
    reader_config = ReaderConfig(
        shards=shards,
        batch_size=d.batch_size,
        crop_size=d.crop_size,
        shuffle_buffer=d.shuffle_buffer,
        num_workers=0,
        resampled=True,
    )

    # Reader alone.
    loader = iter(make_loader(reader_config))
    next(loader)  # fills the shuffle buffer
    tic, cpu = time.perf_counter(), time.process_time()
    batches = list(itertools.islice(loader, STEPS))
    reader_s = (time.perf_counter() - tic) / STEPS
    reader_cpu = (time.process_time() - cpu) / STEPS

    # Model alone, on those batches.
    from supir.train import build_model

    parts, model, hint = build_model(config, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.optim.lr)
    times, cpu_times = [], []
    for i, batch in enumerate(batches):
        tic, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        training_loss(model, parts, batch, torch.Generator().manual_seed(i), hint, d.resolution).backward()
        optimizer.step()
        times.append(time.perf_counter() - tic)
        cpu_times.append(time.process_time() - cpu)
    model_s = sorted(times)[len(times) // 2]
    model_cpu = sorted(cpu_times)[len(cpu_times) // 2]

    # End to end through the trainer and the reader.
    config = load_config(
        ROOT / "supir" / "configs" / "tiny.yaml", [*overrides, f"steps={STEPS + 2}", "data.resampled=true"]
    )
    tic = time.perf_counter()
    result = train(config, echo=lambda _: None)
    total_s = time.perf_counter() - tic
    step_s = [float(r) for r in _step_seconds(tmp_path / "run" / "log.csv")][2:]  # skip warm-up steps
    end_to_end_s = sorted(step_s)[len(step_s) // 2]

    counts = parameter_counts()
    record = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "tiny_cpu": {
            "config": "supir/configs/tiny.yaml (batch 4, 512 crops -> 64 px, tiny random SDXL)",
            "steps_measured": STEPS,
            "reader_seconds_per_batch": round(reader_s, 4),
            "model_seconds_per_step": round(model_s, 4),
            "end_to_end_seconds_per_step_median": round(end_to_end_s, 4),
            "end_to_end_steps_per_second": round(1 / end_to_end_s, 3),
            "reader_share_of_step": round(reader_s / (reader_s + model_s), 3),
            # CPU seconds (all threads) are less distorted than wall time on a shared, loaded machine.
            "reader_cpu_seconds_per_batch": round(reader_cpu, 4),
            "model_cpu_seconds_per_step": round(model_cpu, 4),
            "reader_share_of_step_cpu": round(reader_cpu / (reader_cpu + model_cpu), 3),
            "train_call_seconds_incl_model_build": round(total_s, 2),
            "loss_first_last": [round(result["losses"][0], 4), round(result["losses"][-1], 4)],
        },
        "sdxl_parameter_counts_meta_device": counts,
        "gpu": _gpu_note(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    assert record["tiny_cpu"]["end_to_end_seconds_per_step_median"] > 0


def _step_seconds(log_csv: Path):
    for line in log_csv.read_text().splitlines()[1:]:
        step, name, value = line.split(",")
        if name == "seconds_per_step":
            yield value


def _gpu_note():
    if not torch.cuda.is_available():
        from tests.benchmarks.gpu_results import last_gpu_check

        return {
            "available": False,
            "note": "no GPU in this run; the last GPU measurements (scripts/gpu_check.py) follow",
            "last_gpu_check": last_gpu_check("train_real", "trainer", "trainer_resume", "trainer_ddp"),
        }
    from tests.benchmarks.train_gpu import measure

    return {"available": True, "device": torch.cuda.get_device_name(0), **measure()}

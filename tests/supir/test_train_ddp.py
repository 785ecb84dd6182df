"""Distributed training for real: two CPU processes, gloo, DistributedDataParallel."""

import json
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from supir.tiny_sdxl import build_tiny_sdxl
from tests.supir.train_helpers import ddp_worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_see_disjoint_data_and_end_identical(tmp_path):
    sdxl_dir = build_tiny_sdxl(tmp_path / "sdxl", seed=0)
    mp.spawn(ddp_worker, args=(2, _free_port(), str(sdxl_dir), str(tmp_path)), nprocs=2, join=True)
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    keys = [set(log["keys"]) for log in logs]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert logs[0]["losses"] == logs[1]["losses"]  # the logged loss is the all-reduced mean
    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # ...and training moved them (identical because synchronised, not because untouched).
    assert any(weights[0][k].abs().sum() > 0 for k in weights[0] if "zero_conv" in k)
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "adaptor.safetensors").exists()

"""End to end on real files: WebDataset tars -> supir.reader -> `python -m supir.train` -> checkpoint ->
`python -m supir.restore` on a PNG."""

import io
import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from supir.restore import main as restore_main
from supir.tiny_sdxl import build_tiny_sdxl
from supir.train import main as train_main


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path, n, seed=0, size=64):
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f, wds.TarWriter(f, mtime=0) as writer:
        for i in range(n):
            gt = np.repeat(
                np.repeat(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8), 8, 0), 8, 1
            )
            lq = np.asarray(Image.fromarray(gt).resize((size // 4, size // 4), Image.BICUBIC))
            meta = {
                "is_negative": i % 4 == 3,
                "original_size": [size * 2, size],
                "crop_box": [0, 0, size, size],
            }
            writer.write(
                {
                    "__key__": f"img{seed}_{i:03d}",
                    "gt.png": _png(gt),
                    "lq.png": _png(lq),
                    "txt": "a test pattern" if i % 4 != 3 else "blur, low quality",
                    "json": json.dumps(meta),
                }
            )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_shard(root / "train-000000.tar", 4, seed=0)
    write_shard(root / "val-000000.tar", 1, seed=1)
    sdxl = build_tiny_sdxl(root / "sdxl")
    config = root / "config.yaml"
    config.write_text(
        f"model: {{pretrained: {sdxl}, adaptor_depth: [1, 1]}}\n"
        f"data: {{shards: {root}/train-000000.tar, val_shards: {root}/val-000000.tar, crop_size: 64,"
        " resolution: 32, batch_size: 2, shuffle_buffer: 0, num_workers: 0}\n"
        "val: {every: 3, sampler_steps: 2}\n"
        f"steps: 3\noutput_dir: {root}/run\ndevice: cpu\nlog_every: 1\n"
    )
    assert train_main(["--config", str(config), "optim.lr=1e-3"]) == 0
    return root


def test_train_cli_reads_shards_and_writes_a_checkpoint(trained, capsys):
    checkpoint = trained / "run" / "checkpoints" / "step-000003"
    assert (checkpoint / "adaptor.safetensors").exists() and (checkpoint / "optimizer.pt").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["epoch"] == 1  # 2 batches per epoch: step 3 is in the 2nd epoch
    log = (trained / "run" / "log.csv").read_text()
    assert "3,loss," in log and "val/psnr" in log


def test_train_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    assert train_main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_restore_cli(trained, tmp_path):
    Image.fromarray(np.full((20, 28, 3), 120, dtype=np.uint8)).save(tmp_path / "lq.png")
    checkpoint = trained / "run" / "checkpoints" / "step-000003"
    rc = restore_main(
        [
            str(tmp_path / "lq.png"),
            str(tmp_path / "out"),
            "--checkpoint",
            str(checkpoint),
            "--steps",
            "2",
            "--upscale",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = Image.open(tmp_path / "out" / "lq.png")
    assert out.size == (56, 40)
    # The GPU default: frozen SDXL in bf16 under autocast, trainable parts fp32; same image up to rounding.
    args = [str(tmp_path / "lq.png"), str(tmp_path / "bf16"), "--checkpoint", str(checkpoint), "--steps", "2"]
    assert restore_main([*args, "--upscale", "2", "--device", "cpu", "--dtype", "bfloat16"]) == 0
    diff = np.abs(np.asarray(Image.open(tmp_path / "bf16" / "lq.png"), float) - np.asarray(out, float))
    assert diff.mean() < 8, diff.mean()
    assert (
        restore_main([str(tmp_path / "missing"), str(tmp_path / "o"), "--checkpoint", str(checkpoint)]) == 2
    )

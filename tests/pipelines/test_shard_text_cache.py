"""`shard --text-encoder`: cached text conditioning in the tars, read by the trainer without text encoders."""

import json
import tarfile
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from pipelines.cli import cli
from schemas.sample import TEXT_EMBEDS_MEMBER, TEXT_POOLED_MEMBER
from supir.conditioning import encode_prompts, load_sdxl
from supir.prompts import training_prompt
from supir.text_cache import read_npy
from supir.tiny_sdxl import build_tiny_sdxl
from supir.train import train
from supir.train_config import load_config
from tests.pipelines.shard_corpus import build_catalog

PRESET_24GB = Path(__file__).parents[2] / "supir" / "configs" / "finetune-v0q-24gb.yaml"


def test_shards_carry_the_text_cache_and_the_trainer_uses_it(tmp_path, ray_cluster):
    root = tmp_path / "root"
    build_catalog(root, n_images=4, n_negatives=1)
    sdxl = build_tiny_sdxl(tmp_path / "sdxl", seed=0)
    args = ["--root", str(root), "shard", "--gt-size", "96", "--val-fraction", "0", "--text-encoder", str(sdxl)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "shards" / "supir.manifest.json").read_text())
    tars = [root / "shards" / e["shard"] for s in manifest["splits"].values() for e in s["shards"]]
    samples = {}
    for path in tars:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    assert samples and all(TEXT_EMBEDS_MEMBER in s and TEXT_POOLED_MEMBER in s for s in samples.values())
    # The members are the float16 embeddings of exactly the prompt the trainer would encode.
    parts = load_sdxl(sdxl)
    sample = next(iter(samples.values()))
    meta = json.loads(sample["json"])
    embeds, pooled = encode_prompts(parts, [training_prompt(sample["txt"].decode(), meta["is_negative"])])
    np.testing.assert_allclose(read_npy(sample[TEXT_EMBEDS_MEMBER]).astype(np.float32), embeds[0].numpy(),
                               rtol=1e-2, atol=2e-3)
    np.testing.assert_allclose(read_npy(sample[TEXT_POOLED_MEMBER]).astype(np.float32), pooled[0].numpy(),
                               rtol=1e-2, atol=2e-3)
    assert len(meta["text_encoder"]) == 16

    # The same catalog sharded again gives identical bytes (the cache is deterministic).
    first = {p.name: p.read_bytes() for p in tars}
    for p in tars:
        p.unlink()
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert {p.name: p.read_bytes() for p in tars} == first

    # The 24 GB preset (8-bit AdamW, cached text: the text encoders stay on the CPU) trains on these shards.
    config = load_config(PRESET_24GB, [
        f"model.pretrained={sdxl}", "model.adaptor_depth=[1, 1]", "init_from=null", "model.frozen_dtype=float32",
        "model.gradient_checkpointing=false", "mixed_precision='no'", f"output_dir={tmp_path / 'run'}",
        "device=cpu", f"data.shards={root / 'shards' / 'supir.manifest.json'}", "data.crop_size=64",
        "data.batch_size=2", "data.num_workers=0", "data.resampled=false", "optim.grad_accum=1",
        "optim.warmup_steps=0", "val.every=0", "steps=2", "checkpoint_every=0",
    ])  # fmt: skip
    assert config.data.cached_text and config.optim.name == "adamw8bit"
    out = train(config, echo=lambda _: None)
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))

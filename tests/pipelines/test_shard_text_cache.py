"""`shard --text-encoder`: cached text conditioning in the tars, read by the trainer without text encoders."""

import json
import tarfile

import numpy as np
from click.testing import CliRunner

from pipelines.cli import cli
from schemas.sample import TEXT_EMBEDS_MEMBER, TEXT_POOLED_MEMBER
from supir.conditioning import encode_prompts, load_sdxl
from supir.prompts import training_prompt
from supir.text_cache import read_npy
from supir.tiny_sdxl import build_tiny_sdxl
from supir.train import train
from tests.pipelines.shard_corpus import build_catalog
from tests.supir.train_helpers import tiny_config


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

    # Training from these shards with data.cached_text keeps the text encoders on the CPU and runs.
    config = tiny_config(tmp_path / "run", sdxl, f"data.shards={root / 'shards' / 'supir.manifest.json'}",
                         "data.cached_text=true", "data.crop_size=64", "data.batch_size=2", "data.num_workers=0",
                         "steps=2")  # fmt: skip
    out = train(config, echo=lambda _: None)
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))

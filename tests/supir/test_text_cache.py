"""Cached text conditioning: the shard members, the reader's batches, and the same loss as live encoders."""

import json

import numpy as np
import pytest
import torch

from schemas.sample import TEXT_EMBEDS_MEMBER, TEXT_POOLED_MEMBER
from supir.conditioning import encode_prompts, load_sdxl
from supir.prompts import training_prompt
from supir.reader import make_loader
from supir.text_cache import read_npy, text_encoder_id, text_members
from supir.tiny_sdxl import build_tiny_sdxl
from supir.train import training_loss
from tests.supir.test_reader import _config, make_sample, write_tar
from tests.supir.train_helpers import synthetic_batches


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return load_sdxl(build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "sdxl", seed=0))


def _cached_samples(parts, n=6):
    samples = [make_sample(i) for i in range(n)]
    texts = [training_prompt(s["txt"].decode(), json.loads(s["json"])["is_negative"]) for s in samples]
    for sample, members in zip(samples, text_members(parts, texts)):
        sample.update(members)
    return samples, texts


def test_members_hold_float16_embeddings_of_the_training_prompt(parts):
    samples, texts = _cached_samples(parts, n=2)
    embeds, pooled = encode_prompts(parts, texts)
    got = read_npy(samples[0][TEXT_EMBEDS_MEMBER])
    assert got.dtype == np.float16 and got.shape == tuple(embeds.shape[1:])
    np.testing.assert_allclose(got.astype(np.float32), embeds[0].numpy(), rtol=1e-2, atol=1e-3)
    assert read_npy(samples[1][TEXT_POOLED_MEMBER]).shape == tuple(pooled.shape[1:])
    assert text_encoder_id(parts) == text_encoder_id(parts) and len(text_encoder_id(parts)) == 16


def test_reader_batches_carry_the_cache_and_dropout_gives_zeros(parts, tmp_path):
    samples, _ = _cached_samples(parts)
    url = write_tar(tmp_path / "c-train-000000.tar", samples)
    batch = next(iter(make_loader(_config([url], batch_size=6, shuffle_buffer=0))))
    assert batch["prompt_embeds"].shape[:2] == (6, 77) and batch["pooled_embeds"].shape[0] == 6
    assert batch["prompt_embeds"].abs().sum() > 0
    dropped = next(iter(make_loader(_config([url], batch_size=6, shuffle_buffer=0, caption_dropout=1.0))))
    assert dropped["txt"] == [""] * 6
    assert dropped["prompt_embeds"].abs().sum() == 0 and dropped["pooled_embeds"].abs().sum() == 0
    # Without the members the batch has no cache: the trainer encodes live.
    plain = write_tar(tmp_path / "p-train-000000.tar", [make_sample(i) for i in range(6)])
    assert "prompt_embeds" not in next(iter(make_loader(_config([plain], batch_size=6))))


def test_cached_training_loss_equals_the_live_one(parts):
    batch = synthetic_batches(1, batch_size=3, size=32)[0]
    embeds, pooled = encode_prompts(parts, batch["txt"])
    cached = dict(batch, prompt_embeds=embeds.half(), pooled_embeds=pooled.half())  # stored as float16
    torch.manual_seed(0)
    model = _tiny_model(parts)
    with torch.no_grad():
        live = training_loss(model, parts, batch, torch.Generator().manual_seed(5)).item()
        again = training_loss(model, parts, cached, torch.Generator().manual_seed(5)).item()
        other = dict(cached, prompt_embeds=torch.zeros_like(embeds), pooled_embeds=torch.zeros_like(pooled))
        unconditional = training_loss(model, parts, other, torch.Generator().manual_seed(5)).item()
    assert again == pytest.approx(live, rel=1e-4)
    # The text moves the loss of this tiny random model only a little; float16 storage moves it far less.
    assert abs(again - live) < 0.05 * abs(unconditional - live)


def _tiny_model(parts):
    from supir.model import SupirUNet

    model = SupirUNet.from_unet(parts.unet, (1, 1))
    with torch.no_grad():
        for p in model.connectors.parameters():
            p.normal_(0, 0.02)
    return model

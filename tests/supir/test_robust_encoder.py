"""Degradation-robust encoder: trains only the encoder copy, the frozen decoder stays put, round trips."""

import torch

from supir.conditioning import encode_images
from supir.robust_encoder import RobustEncoder, robust_encoder_loss, train_robust_encoder
from supir.tiny_sdxl import build_tiny_sdxl_pipeline
from tests.supir.train_helpers import synthetic_batches


def test_robust_encoder_trains_encoder_only_and_round_trips(tmp_path):
    vae = build_tiny_sdxl_pipeline(seed=0).vae
    frozen = {k: v.clone() for k, v in vae.state_dict().items()}
    batches = synthetic_batches(1, batch_size=2, size=32)
    gt, lq = batches[0]["gt"], batches[0]["lq"]
    start = RobustEncoder(vae)
    # A fresh copy encodes exactly like the VAE: training starts from SDXL's encoder.
    torch.testing.assert_close(encode_images(start, gt, sample=False), encode_images(vae, gt, sample=False))
    before = robust_encoder_loss(start, vae, gt, lq)
    encoder, losses = train_robust_encoder(vae, batches, steps=8, lr=1e-3, echo=lambda _: None)
    after = robust_encoder_loss(encoder, vae, gt, lq)
    assert losses[-1] < losses[0]
    assert after[1] < before[1]  # LQ and GT decode closer together
    assert after[2] < 2 * before[2] + 0.05  # ...without giving up the clean reconstruction (the anchor)
    assert all(torch.equal(v, frozen[k]) for k, v in vae.state_dict().items())
    assert all(p.grad is None for p in vae.parameters())
    encoder.save_pretrained(tmp_path)
    loaded = RobustEncoder.from_pretrained(tmp_path, vae)
    torch.testing.assert_close(
        encode_images(loaded, lq, sample=False), encode_images(encoder, lq, sample=False)
    )
    assert not torch.allclose(encode_images(loaded, lq, sample=False), encode_images(vae, lq, sample=False))

"""Real-size measurements for test_bench_train (run only when a CUDA GPU is present).

Random weights from the real SDXL UNet config (no download): the SUPIR model (frozen UNet in bf16 +
fp32 adaptor/connectors under bf16 autocast, gradient checkpointing) at 512² (64² latents):
seconds per AdamW step and peak memory at batch 1/4/8; then a 10-step restoration-guided sampler
run with CFG at 1024² (128² latents). Text embeddings are random tensors of SDXL's shapes (the text
encoders and VAE are not part of the timed model step).
"""

import time

import torch
from diffusers import UNet2DConditionModel

from supir.model import SDXL_UNET_CONFIG, SupirUNet
from supir.sampler import SamplerConfig, eps_denoise, restoration_guided_sample


def _conditioning(batch, config, device, size_px):
    ctx = config["cross_attention_dim"]
    pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    ids = torch.tensor([[size_px, size_px, 0, 0, size_px, size_px]], dtype=torch.float32, device=device)
    return (
        torch.randn(batch, 77, ctx, device=device),
        {"text_embeds": torch.randn(batch, pooled, device=device), "time_ids": ids.expand(batch, 6)},
    )


def measure(
    unet_config=SDXL_UNET_CONFIG,
    depth=(1, 1, 4),
    device="cuda",
    batches=(1, 4, 8),
    train_px=512,
    sample_px=1024,
    sample_steps=10,
    timed_steps=5,
):
    cuda = torch.device(device).type == "cuda"
    with torch.device(device):  # random init on the device: seconds instead of minutes on CPU
        unet = UNet2DConditionModel(**unet_config)
    unet = unet.to(torch.bfloat16)
    model = SupirUNet.from_unet(unet, depth)
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    latent = train_px // 8
    out = {"train": {}, "config": {"depth": list(depth), "train_px": train_px, "dtype": "bf16 autocast"}}
    for batch in batches:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ehs, added = _conditioning(batch, unet_config, device, train_px)
        x = torch.randn(batch, 4, latent, latent, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        times = []
        for _ in range(timed_steps + 1):
            if cuda:
                torch.cuda.synchronize()
            tic = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                loss = model(x, t, ehs, added, x).float().square().mean()
            loss.backward()
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - tic)
        out["train"][f"batch_{batch}"] = {
            "seconds_per_step": round(sorted(times[1:])[len(times[1:]) // 2], 4),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        }
    model.eval()
    latent = sample_px // 8
    ehs, added = _conditioning(2, unet_config, device, sample_px)  # positive + negative in one batch
    z_lq = torch.randn(1, 4, latent, latent, device=device)

    @torch.no_grad()
    def denoiser(x, sigma, control_scale):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            d = eps_denoise(
                model,
                torch.cat([x, x]),
                sigma,
                encoder_hidden_states=ehs,
                added_cond_kwargs=added,
                lq_latent=torch.cat([z_lq, z_lq]),
                control_scale=control_scale,
            )
        return d.chunk(2)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    restoration_guided_sample(
        denoiser, z_lq, SamplerConfig(steps=sample_steps), generator=torch.Generator().manual_seed(0)
    )
    if cuda:
        torch.cuda.synchronize()
    out["sampler"] = {
        "px": sample_px,
        "steps": sample_steps,
        "cfg": True,
        "seconds": round(time.perf_counter() - tic, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    return out

"""Train the SUPIR adaptor and connectors on WebDataset shards.

    python -m supir.train --config supir/configs/tiny.yaml                     # CPU demo
    torchrun --nproc_per_node 8 -m supir.train --config supir/configs/sdxl.yaml optim.lr=1e-5

Objective: SDXL's own ε-prediction loss on its discrete schedule (see supir.sampler): a GT latent z,
t ~ U{0..999}, x = z + σ_t·ε, the model sees x/sqrt(σ_t²+1) plus the LQ latent (hint) and the text
(caption + positive prompt; negatives carry the negative prompt; "" after caption dropout) and
predicts ε. Only the adaptor and connectors train; SDXL stays frozen.

Every random draw of a step comes from a generator seeded by (seed, step, rank, micro-batch), so a
resumed run repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from schemas.errors import ConfigError, SupirDataError
from schemas.runs import derive_seed
from supir.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from supir.conditioning import encode_images, encode_prompts, load_sdxl, sdxl_time_ids
from supir.model import SupirUNet
from supir.sampler import NUM_TRAIN_TIMESTEPS, TRAIN_SIGMAS, append_dims, c_in
from supir.train_config import TrainConfig, config_to_dict, load_config
from supir.train_log import RunLog

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def init_distributed(backend: str = "auto") -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group torchrun (or a test) described."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def build_model(config: TrainConfig, device: torch.device, rank: int = 0):
    """(frozen SDXL parts, SupirUNet, encoder of the LQ hint)."""
    pretrained = Path(config.model.pretrained)
    if config.model.build_tiny and not (pretrained / "model_index.json").exists():
        if rank == 0:
            from supir.tiny_sdxl import build_tiny_sdxl

            build_tiny_sdxl(pretrained, seed=0)
        if dist.is_initialized():
            dist.barrier()
    parts = load_sdxl(config.model.pretrained, device=device, dtype=DTYPES[config.model.frozen_dtype])
    model = SupirUNet.from_unet(parts.unet, config.model.adaptor_depth, config.model.cross_attn_connectors)
    if config.model.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    hint_encoder = parts.vae
    if config.model.robust_encoder:
        from supir.robust_encoder import RobustEncoder

        hint_encoder = RobustEncoder.from_pretrained(config.model.robust_encoder, parts.vae).to(device)
    return parts, model, hint_encoder


def prepare_images(batch: dict, resolution: int | None, device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """GT and LQ on `device`, resized to `resolution` if set; returns the resize factor too."""
    gt, lq = batch["gt"].to(device).float(), batch["lq"].to(device).float()
    if resolution is None or gt.shape[-1] == resolution:
        return gt, lq, 1.0
    factor = resolution / gt.shape[-1]
    size = (round(gt.shape[-2] * factor), resolution)
    gt = F.interpolate(gt, size=size, mode="bilinear", antialias=True, align_corners=False)
    lq = F.interpolate(lq, size=size, mode="bilinear", antialias=True, align_corners=False)
    return gt, lq, factor


def training_loss(
    model,
    parts,
    batch: dict,
    generator: torch.Generator,
    hint_encoder=None,
    resolution: int | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """The ε-prediction loss of one batch (model may be DDP-wrapped)."""
    device = next(parts.vae.parameters()).device
    gt, lq, factor = prepare_images(batch, resolution, device)
    z = encode_images(parts.vae, gt, generator=generator, sample=True)
    z_lq = encode_images(hint_encoder if hint_encoder is not None else parts.vae, lq, sample=False)
    if "prompt_embeds" in batch:  # cached text conditioning (supir/text_cache.py): no text encoders needed
        embeds, pooled = batch["prompt_embeds"].to(device).float(), batch["pooled_embeds"].to(device).float()
    else:
        embeds, pooled = encode_prompts(parts, list(batch["txt"]))
    time_ids = sdxl_time_ids(
        (batch["original_size"].float() * factor).round(),
        (batch["crop_top_left"].float() * factor).round(),
        gt.shape[-2:],
    ).to(device)
    b = z.shape[0]
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=generator)
    sigma = TRAIN_SIGMAS[t].float().to(device)
    eps = torch.randn(z.shape, generator=generator).to(device)
    x = z + append_dims(sigma, z.ndim) * eps
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = model(
            x * append_dims(c_in(sigma), z.ndim),
            t.to(device),
            embeds,
            {"text_embeds": pooled, "time_ids": time_ids},
            z_lq,
        )
    return F.mse_loss(pred.float(), eps)


class DataStream:
    """Endless batches over epochs, with a resumable position (epoch, batches used in that epoch)."""

    def __init__(self, source: Iterable[dict], epoch: int = 0, position: int = 0):
        self.source, self.epoch, self.position = source, epoch, position
        self._it = None

    def next(self) -> dict:
        for _ in range(2):
            if self._it is None:
                if hasattr(self.source, "set_epoch"):
                    self.source.set_epoch(self.epoch)
                self._it = iter(self.source)
                for _ in range(self.position):  # fast-forward to where the checkpoint stopped
                    next(self._it)
            try:
                batch = next(self._it)
                self.position += 1
                return batch
            except StopIteration:
                self._it, self.epoch, self.position = None, self.epoch + 1, 0
        raise ConfigError("the training data yields no batch (fewer samples than one batch per rank?)")


def make_source(config: TrainConfig, split: str, shards: str | None = None):
    """The shard reader (supir.reader) for the configured shards."""
    from supir.reader import ReaderConfig, make_loader

    d = config.data
    workers = d.num_workers if split == d.split else 0  # val: a few batches, no worker start-up
    if not (shards or d.shards):
        raise ConfigError("data.shards is empty: point it at a shard manifest or tar pattern")
    return make_loader(
        ReaderConfig(
            shards=shards or d.shards,
            split=split,
            batch_size=d.batch_size,
            crop_size=d.crop_size,
            shuffle_buffer=d.shuffle_buffer if split == d.split else 0,
            resampled=d.resampled and split == d.split,
            caption_dropout=d.caption_dropout if split == d.split else 0.0,
            seed=config.seed,
            num_workers=workers,
            partial_batches=split != d.split,
        )
    )


def _val_source(config: TrainConfig):
    d = config.data
    if d.val_shards:
        return make_source(config, d.val_split, d.val_shards)
    if d.shards.endswith(".manifest.json"):
        try:
            return make_source(config, d.val_split)
        except ConfigError:
            return None
    return None


def train(
    config: TrainConfig,
    batches: Iterable[dict] | None = None,
    val_batches: Iterable[dict] | None = None,
    echo=print,
) -> dict:
    """Run training; returns {"losses": per-step losses, "step", "checkpoint": last path, "model"}."""
    rank, world, local_rank = init_distributed(config.dist_backend)
    device = resolve_device(config.device, local_rank)
    torch.manual_seed(config.seed)
    parts, model, hint_encoder = build_model(config, device, rank)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(
        params,
        lr=config.optim.lr,
        betas=(config.optim.beta1, config.optim.beta2),
        weight_decay=config.optim.weight_decay,
    )
    start_step, epoch, position = 0, 0, 0
    resume = latest_checkpoint(config.output_dir) if config.resume == "auto" else config.resume
    if resume:
        state = load_checkpoint(resume, model, optimizer)
        start_step, epoch, position = state["step"], state["epoch"], state["position"]
        echo(f"resumed from {resume} at step {start_step}")
        if start_step >= config.steps:
            echo(
                f"nothing to do: already at step {start_step} of {config.steps} (raise steps= or use a new output_dir)"
            )
    ddp = None
    if world > 1:
        # Only adaptor and connector parameters require gradients, so only they are all-reduced.
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward = ddp or model
    source = batches if batches is not None else make_source(config, config.data.split)
    if resume and config.data.resampled and batches is None:
        # A resampled stream is endless: instead of replaying `position` batches, continue with a fresh
        # deterministic shard/sample order seeded by the resume step.
        epoch, position = start_step, 0
    stream = DataStream(source, epoch, position)
    if val_batches is None and config.val.every and rank == 0:
        val_batches = _val_source(config)
    log = RunLog(config.output_dir, enabled=rank == 0)
    bf16 = config.mixed_precision == "bf16"
    accum = config.optim.grad_accum
    losses, last_ckpt, step = [], None, start_step
    model.train()
    for step in range(start_step, config.steps):
        tic = time.perf_counter()
        lr = (
            config.optim.lr * min(1.0, (step + 1) / config.optim.warmup_steps)
            if config.optim.warmup_steps
            else config.optim.lr
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for micro in range(accum):
            batch = stream.next()
            generator = torch.Generator().manual_seed(
                derive_seed(config.seed, f"step{step}:rank{rank}:micro{micro}")
            )
            sync = ddp.no_sync() if ddp is not None and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                loss = training_loss(
                    forward, parts, batch, generator, hint_encoder, config.data.resolution, bf16
                )
                (loss / accum).backward()
            total += loss.detach() / accum
        if config.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm)
        optimizer.step()
        if world > 1:
            dist.all_reduce(total)
            total /= world
        losses.append(float(total))
        done = step + 1
        seconds = time.perf_counter() - tic
        log.scalars(done, {"loss": losses[-1], "lr": lr, "seconds_per_step": seconds})
        if rank == 0 and (done % config.log_every == 0 or done == config.steps or done == start_step + 1):
            echo(f"step {done:6d}  loss {losses[-1]:.4f}  lr {lr:.2e}  {seconds:.2f}s/step")
        final = done == config.steps
        if (config.checkpoint_every and done % config.checkpoint_every == 0) or final:
            if rank == 0:
                last_ckpt = save_checkpoint(
                    config.output_dir,
                    done,
                    model,
                    optimizer,
                    {"epoch": stream.epoch, "position": stream.position, "config": config_to_dict(config)},
                )
            if world > 1:
                dist.barrier()
        if config.val.every and val_batches is not None and (done % config.val.every == 0 or final):
            if rank == 0:
                from supir.validation import validate

                metrics = validate(model, parts, val_batches, config, hint_encoder)
                log.scalars(done, {f"val/{k}": v for k, v in metrics.items()})
                echo(f"step {done:6d}  validation " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if world > 1:
                dist.barrier()
    log.close()
    return {
        "losses": losses,
        "step": step + 1 if config.steps > start_step else start_step,
        "checkpoint": last_ckpt,
        "model": model,
        "rank": rank,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supir.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config (supir/configs/tiny.yaml, sdxl.yaml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of project errors")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-4 steps=200")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        result = train(config)
    except SupirDataError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result["losses"] and result["rank"] == 0:
        print(
            f"done: {len(result['losses'])} steps, loss {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f};"
            f" checkpoint {result['checkpoint']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

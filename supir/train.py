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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from schemas.runs import derive_seed
from supir.batches import DataStream, make_source, prepare_images, val_source
from supir.checkpoint import latest_checkpoint, load_checkpoint, load_init, save_checkpoint
from supir.cli_main import cli_main
from supir.conditioning import encode_images, encode_prompts, load_sdxl, sdxl_time_ids
from supir.model import SupirUNet
from supir.optim import build_optimizer
from supir.robust_encoder import RobustEncoder
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
    text_device = "cpu" if config.data.cached_text else None  # cached text: encoders only for validation
    parts = load_sdxl(config.model.pretrained, device, DTYPES[config.model.frozen_dtype], text_device)
    m = config.model
    model = SupirUNet.from_unet(parts.unet, m.adaptor_depth, m.cross_attn_connectors, m.residual_connectors)
    if m.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    hint_encoder = parts.vae
    if config.init_from:
        # A released checkpoint or one of ours; its E_dr (if any) becomes the LQ hint encoder.
        robust = load_init(config.init_from, model, parts.vae, m.adaptor_depth)
        hint_encoder = robust if robust is not None else hint_encoder
    if m.robust_encoder:
        from supir.robust_encoder import RobustEncoder

        hint_encoder = RobustEncoder.from_pretrained(m.robust_encoder, parts.vae).to(device)
    return parts, model, hint_encoder


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


@dataclass
class Run:
    """Everything one training run holds between steps (built by `start_run`)."""

    config: TrainConfig
    rank: int
    world: int
    device: torch.device
    parts: object
    model: SupirUNet
    hint_encoder: object
    optimizer: torch.optim.Optimizer
    params: list
    ddp: torch.nn.parallel.DistributedDataParallel | None
    stream: DataStream
    val_batches: Iterable[dict] | None
    log: RunLog
    start_step: int = 0
    last_checkpoint: Path | None = None


def start_run(config: TrainConfig, batches=None, val_batches=None, echo=print) -> Run:
    """Build the model and optimizer, resume from a checkpoint when there is one, open the data."""
    rank, world, local_rank = init_distributed(config.dist_backend)
    device = resolve_device(config.device, local_rank)
    torch.manual_seed(config.seed)
    parts, model, hint_encoder = build_model(config, device, rank)
    if config.lora.enabled:
        from supir.lora import add_lora

        add_lora(model.adaptor, config.lora, frozen_dtype=DTYPES[config.model.frozen_dtype])
    params = model.trainable_parameters()
    o = config.optim
    optimizer = build_optimizer(params, o.name, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    start_step, epoch, position = resume(config, model, optimizer, echo)
    ddp = None
    if world > 1:
        # Only adaptor and connector parameters require gradients, so only they are all-reduced.
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    source = batches if batches is not None else make_source(config, config.data.split)
    if start_step and config.data.resampled and batches is None:
        # A resampled stream is endless: instead of replaying `position` batches, continue with a fresh
        # deterministic shard/sample order seeded by the resume step.
        epoch, position = start_step, 0
    if val_batches is None and config.val.every and rank == 0:
        val_batches = val_source(config)
    log = RunLog(config.output_dir, enabled=rank == 0)
    stream = DataStream(source, epoch, position)
    return Run(
        config, rank, world, device, parts, model, hint_encoder, optimizer, params, ddp, stream,
        val_batches, log, start_step,
    )  # fmt: skip


def resume(config: TrainConfig, model, optimizer, echo=print) -> tuple[int, int, int]:
    """(step, epoch, position) of the checkpoint `config.resume` names (0, 0, 0 when none)."""
    path = latest_checkpoint(config.output_dir) if config.resume == "auto" else config.resume
    if not path:
        return 0, 0, 0
    state = load_checkpoint(path, model, optimizer)
    echo(f"resumed from {path} at step {state['step']}")
    if state["step"] >= config.steps:
        echo(
            f"nothing to do: already at step {state['step']} of {config.steps} (raise steps= or use a new output_dir)"
        )
    return state["step"], state["epoch"], state["position"]


def train_step(run: Run, step: int) -> tuple[float, float]:
    """One optimizer step over `grad_accum` micro-batches; returns (mean loss over ranks, lr)."""
    config, optimizer = run.config, run.optimizer
    warmup = config.optim.warmup_steps
    lr = config.optim.lr * min(1.0, (step + 1) / warmup) if warmup else config.optim.lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    accum, bf16 = config.optim.grad_accum, config.mixed_precision == "bf16"
    total = torch.zeros((), device=run.device)
    for micro in range(accum):
        batch = run.stream.next()
        seed = derive_seed(config.seed, f"step{step}:rank{run.rank}:micro{micro}")
        generator = torch.Generator().manual_seed(seed)
        last = micro == accum - 1
        sync = run.ddp.no_sync() if run.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            loss = training_loss(
                run.ddp or run.model,
                run.parts,
                batch,
                generator,
                run.hint_encoder,
                config.data.resolution,
                bf16,
            )
            (loss / accum).backward()
        total += loss.detach() / accum
    if config.optim.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(run.params, config.optim.max_grad_norm)
    optimizer.step()
    if run.world > 1:
        dist.all_reduce(total)
        total /= run.world
    return float(total), lr


def checkpoint_if_due(run: Run, done: int) -> None:
    """Every `checkpoint_every` steps and at the end; E_dr goes with it when the run uses one."""
    config = run.config
    if not ((config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.steps):
        return
    if run.rank == 0:
        state = {"epoch": run.stream.epoch, "position": run.stream.position, "config": config_to_dict(config)}
        robust = run.hint_encoder if isinstance(run.hint_encoder, RobustEncoder) else None
        run.last_checkpoint = save_checkpoint(
            config.output_dir, done, run.model, run.optimizer, state, robust_encoder=robust
        )
    if run.world > 1:
        dist.barrier()


def validate_if_due(run: Run, done: int, echo=print) -> None:
    config = run.config
    if not (config.val.every and run.val_batches is not None):
        return
    if done % config.val.every and done != config.steps:
        return
    if run.rank == 0:
        from supir.validation import validate

        metrics = validate(run.model, run.parts, run.val_batches, config, run.hint_encoder)
        run.log.scalars(done, {f"val/{k}": v for k, v in metrics.items()})
        echo(f"step {done:6d}  validation " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if run.world > 1:
        dist.barrier()


def train(
    config: TrainConfig,
    batches: Iterable[dict] | None = None,
    val_batches: Iterable[dict] | None = None,
    echo=print,
) -> dict:
    """Run training; returns {"losses": per-step losses, "step", "checkpoint": last path, "model"}."""
    run = start_run(config, batches, val_batches, echo)
    losses = []
    run.model.train()
    for step in range(run.start_step, config.steps):
        tic = time.perf_counter()
        loss, lr = train_step(run, step)
        losses.append(loss)
        done, seconds = step + 1, time.perf_counter() - tic
        run.log.scalars(done, {"loss": loss, "lr": lr, "seconds_per_step": seconds})
        if run.rank == 0 and (done % config.log_every == 0 or done in (config.steps, run.start_step + 1)):
            echo(f"step {done:6d}  loss {loss:.4f}  lr {lr:.2e}  {seconds:.2f}s/step")
        checkpoint_if_due(run, done)
        validate_if_due(run, done, echo)
    run.log.close()
    return {
        "losses": losses,
        "step": max(config.steps, run.start_step),
        "checkpoint": run.last_checkpoint,
        "model": run.model,
        "hint_encoder": run.hint_encoder,
        "rank": run.rank,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supir.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config (supir/configs/tiny.yaml, sdxl.yaml)")
    parser.add_argument("--plan", action="store_true", help="print the GPU memory plan of the config and exit")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-4 steps=200")
    return cli_main(parser, _run, argv)


def _run(args) -> int:
    config = load_config(args.config, args.overrides)
    if args.plan:
        from supir.memory_plan import plan_for_config

        print(plan_for_config(config).table())
        return 0
    try:
        result = train(config)
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

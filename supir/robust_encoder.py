"""The degradation-robust encoder E_dr (paper §3.1): a fine-tuned copy of the VAE encoder.

It is trained so that an LQ image and its GT decode alike, ‖D(E_dr(x_LQ)) − D(E_dr(x_GT))‖², with the
decoder D frozen. That term alone is minimised by mapping everything to the same (dark, blurry)
image (reported in SUPIR issue #135), so a reconstruction term anchors the clean path to the image
itself: + w·‖D(E_dr(x_GT)) − x_GT‖². The trained encoder then replaces the VAE encoder for the LQ hint
(`model.robust_encoder` in the training config).

    python -m supir.robust_encoder --pretrained tiny-models/sdxl \\
        --shards 'demo/train-shards/supir-train-{000000..000001}.tar' --steps 100 --out runs/robust
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import load_file, save_file
from torch import nn

from schemas.errors import ConfigError
from supir.batches import DataStream, prepare_images
from supir.cli_main import cli_main

WEIGHTS = "robust_encoder.safetensors"
CONFIG = "robust_encoder_config.json"


class _Encoded:
    def __init__(self, moments):
        self.latent_dist = DiagonalGaussianDistribution(moments)


class RobustEncoder(nn.Module):
    """A trainable copy of an `AutoencoderKL`'s encoder; `encode` behaves like the VAE's.

    As in the release (`first_stage_model.denoise_encoder`), only the encoder is copied: the moments
    go through the VAE's own, frozen `quant_conv`, which is not part of this module's parameters or
    state dict. Public API (used by the trainer, the sampler and supir.convert; kept stable):
    `encode(images) -> .latent_dist`, `latents(images)`, `config` (the VAE's), `save_pretrained`,
    `from_pretrained(directory, vae)`, `load_state_dict` of the encoder's keys (``encoder.*``).
    """

    def __init__(self, vae):
        super().__init__()
        self.encoder = copy.deepcopy(vae.encoder).float().requires_grad_(True)
        self._vae = (vae,)  # a tuple: the VAE (and its quant_conv) is shared, not a submodule
        self.config = vae.config  # scaling factor etc., as encode_images expects

    @property
    def quant_conv(self) -> nn.Module | None:
        return getattr(self._vae[0], "quant_conv", None)

    def encode(self, images: torch.Tensor) -> _Encoded:
        moments = self.encoder(images.float())
        quant = self.quant_conv
        if quant is not None:
            moments = quant(moments.to(quant.weight.dtype)).float()
        return _Encoded(moments)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled latent (posterior mean), with gradients."""
        return self.encode(images).latent_dist.mode() * self.config.scaling_factor

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / WEIGHTS
        )
        (directory / CONFIG).write_text(json.dumps({"scaling_factor": self.config.scaling_factor}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, vae) -> RobustEncoder:
        """The VAE gives the architecture (and the shared quant_conv); the weights come from `directory`."""
        encoder = cls(vae)
        device = next(vae.parameters()).device
        state = load_file(Path(directory) / WEIGHTS, device=str(device))
        own = [k for k in state if k.startswith("quant_conv.")]
        if own:
            raise ConfigError(
                f"{directory} holds its own quant_conv ({len(own)} tensors): it was trained before the "
                "encoder shared the VAE's quant_conv (as released); retrain it with python -m supir.robust_encoder"
            )
        encoder.load_state_dict(state)
        return encoder.eval().requires_grad_(False)


def robust_encoder_loss(encoder: RobustEncoder, vae, gt: torch.Tensor, lq: torch.Tensor, anchor_weight=1.0):
    """(total, consistency, anchor): ‖D(E(lq)) − D(E(gt))‖² + w·‖D(E(gt)) − gt‖², decoder frozen."""
    sf = encoder.config.scaling_factor
    decoded = vae.decode(encoder.latents(torch.cat([lq, gt])) / sf).sample.float()
    from_lq, from_gt = decoded.chunk(2)
    consistency = F.mse_loss(from_lq, from_gt)
    anchor = F.mse_loss(from_gt, gt.float())
    return consistency + anchor_weight * anchor, consistency.detach(), anchor.detach()


def train_robust_encoder(
    vae,
    batches,
    steps: int,
    lr: float = 1e-5,
    anchor_weight: float = 1.0,
    resolution: int | None = None,
    echo=print,
) -> tuple[RobustEncoder, list[float]]:
    """Fine-tune a copy of `vae`'s encoder on (gt, lq) batches; returns it and the per-step losses."""
    vae.requires_grad_(False).eval()
    device = next(vae.parameters()).device
    encoder = RobustEncoder(vae).to(device).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=lr)
    stream = DataStream(batches)
    losses = []
    for step in range(steps):
        gt, lq, _ = prepare_images(stream.next(), resolution, device)
        optimizer.zero_grad(set_to_none=True)
        loss, consistency, anchor = robust_encoder_loss(encoder, vae, gt, lq, anchor_weight)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            echo(
                f"step {step + 1:6d}  loss {loss.item():.4f}  consistency {consistency:.4f}  anchor {anchor:.4f}"
            )
    return encoder.eval(), losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m supir.robust_encoder", description=__doc__.split("\n")[0])
    p.add_argument("--pretrained", required=True, help="SDXL diffusers folder or hub id (its vae/ is used)")
    p.add_argument("--shards", required=True, help="shard manifest or tar pattern (as data.shards)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--anchor-weight", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop-size", type=int, default=512)
    p.add_argument("--resolution", type=int, default=None, help="train at this size (default: crop size)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return cli_main(p, _run, argv, errors=(OSError,))


def _run(args) -> None:
    from diffusers import AutoencoderKL

    from supir.reader import ReaderConfig, make_loader

    vae = AutoencoderKL.from_pretrained(args.pretrained, subfolder="vae").to(args.device)
    loader = make_loader(
        ReaderConfig(
            shards=args.shards, batch_size=args.batch_size, crop_size=args.crop_size, caption_dropout=0.0
        )
    )
    encoder, losses = train_robust_encoder(
        vae, loader, args.steps, args.lr, args.anchor_weight, args.resolution
    )
    encoder.save_pretrained(args.out)
    print(f"done: loss {losses[0]:.4f} -> {losses[-1]:.4f}; saved {args.out}")


if __name__ == "__main__":
    sys.exit(main())

"""SUPIR's denoiser: frozen SDXL UNet + trainable adaptor + ZeroSFT connectors (paper Fig. 3(a)).

The frozen UNet's encoder and middle block run as usual (no gradients needed: nothing trainable is
upstream of them). Its decoder is walked block by block so that every skip connection passes through a
ZeroSFT connector fed by the matching adaptor feature, the middle block's output passes through one
too, and (optionally) a ZeroCrossAttn connector sits before each upsampler. The connectors take the
released form (supir.zero_sft), so the untrained model is not SDXL; with ``residual=True`` every
connector starts as the identity and the output equals the frozen UNet's exactly.

Checkpoints hold the trainable parts only (adaptor + connectors, safetensors + JSON configs); the
SDXL weights are loaded from their own diffusers folder or hub id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from supir.adaptor import SupirAdaptor, encoder_pass
from supir.zero_sft import ZeroCrossAttn, ZeroSFT

CONNECTORS_WEIGHTS = "connectors.safetensors"
CONNECTORS_CONFIG = "connectors_config.json"

# unet/config.json of stabilityai/stable-diffusion-xl-base-1.0 (for meta-device sizing and benchmarks).
SDXL_UNET_CONFIG = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}


@dataclass
class ConnectorsConfig:
    """Channel plan of the connectors, derived from the UNet (see `from_unet`)."""

    skip_channels: list[int] = field(default_factory=list)  # per skip, in encoder order
    decoder_channels: list[int] = field(default_factory=list)  # decoder input meeting that skip
    mid_channels: int = 0
    cross_attn: dict[str, list[int]] = field(default_factory=dict)  # up block -> [control ch, query ch]
    residual: bool = False  # True: identity-at-init connectors, not the release's form (see supir.zero_sft)

    @classmethod
    def from_unet(
        cls, unet: UNet2DConditionModel, cross_attn: bool = True, residual: bool = False
    ) -> ConnectorsConfig:
        skips = [unet.conv_in.out_channels]
        for block in unet.down_blocks:
            skips += [r.out_channels for r in block.resnets]
            skips += [d.out_channels for d in block.downsamplers or []]
        decoder = [0] * len(skips)
        k = len(skips)
        points = {}
        for i, block in enumerate(unet.up_blocks):
            for resnet in block.resnets:
                k -= 1
                decoder[k] = resnet.in_channels - skips[k]
            if block.upsamplers is not None and cross_attn:
                points[str(i)] = [skips[k], block.resnets[-1].out_channels]
        return cls(skips, decoder, unet.mid_block.resnets[-1].out_channels, points, residual)


class SupirConnectors(nn.Module):
    """ZeroSFT per skip connection + one after the middle block + ZeroCrossAttn at upsampling points."""

    def __init__(self, config: ConnectorsConfig):
        super().__init__()
        self.config = config
        self.skip = nn.ModuleList(
            ZeroSFT(s, s, d, residual=config.residual)
            for s, d in zip(config.skip_channels, config.decoder_channels)
        )
        self.mid = ZeroSFT(config.mid_channels, config.mid_channels, 0, residual=config.residual)
        self.cross_attn = nn.ModuleDict(
            {i: ZeroCrossAttn(c, q, zero_out=config.residual) for i, (c, q) in config.cross_attn.items()}
        )

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONNECTORS_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
            directory / CONNECTORS_WEIGHTS,
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu") -> SupirConnectors:
        directory = Path(directory)
        config = ConnectorsConfig(**json.loads((directory / CONNECTORS_CONFIG).read_text()))
        connectors = cls(config).to(device)
        connectors.load_state_dict(load_file(directory / CONNECTORS_WEIGHTS, device=str(device)))
        return connectors


class SupirUNet(nn.Module):
    """ε-prediction denoiser H(z_t, z_LQ, t, text): the frozen UNet steered by adaptor + connectors."""

    def __init__(self, unet: UNet2DConditionModel, adaptor: SupirAdaptor, connectors: SupirConnectors):
        super().__init__()
        self.unet = unet.requires_grad_(False).eval()
        self.adaptor = adaptor
        self.connectors = connectors
        self.gradient_checkpointing = False

    @classmethod
    def from_unet(
        cls, unet, transformer_layers_per_block=(1, 1, 4), cross_attn=True, residual=False
    ) -> SupirUNet:
        adaptor = SupirAdaptor.from_unet(unet, transformer_layers_per_block)
        connectors = SupirConnectors(ConnectorsConfig.from_unet(unet, cross_attn, residual))
        return cls(unet, adaptor, connectors.to(next(unet.parameters()).device))

    @classmethod
    def from_pretrained(cls, unet, directory: str | Path) -> SupirUNet:
        """Frozen `unet` + trainable parts saved by `save_trainable` in `directory`."""
        device = next(unet.parameters()).device
        adaptor = SupirAdaptor.from_pretrained(directory, device=device)
        connectors = SupirConnectors.from_pretrained(directory, device=device)
        return cls(unet, adaptor, connectors)

    def save_trainable(self, directory: str | Path) -> None:
        self.adaptor.save_pretrained(directory)
        self.connectors.save_pretrained(directory)

    def trainable_parameters(self) -> list[nn.Parameter]:
        # Under LoRA the adaptor's own weights are frozen: only what requires a gradient trains.
        return [p for m in (self.adaptor, self.connectors) for p in m.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        self.unet.eval()  # frozen: never in training mode
        return self

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True
        self.adaptor.enable_gradient_checkpointing()

    def _maybe_checkpoint(self, fn, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict,
        lq_latent: torch.Tensor,
        control_scale: float = 1.0,
    ) -> torch.Tensor:
        control = self.adaptor(sample, timestep, encoder_hidden_states, added_cond_kwargs, lq_latent)
        unet = self.unet
        dtype = unet.dtype
        sample = sample.to(dtype)
        encoder_hidden_states = encoder_hidden_states.to(dtype)
        added_cond_kwargs = {k: v.to(dtype) for k, v in added_cond_kwargs.items()}
        with torch.no_grad():  # frozen encoder: nothing trainable upstream
            emb, skips = encoder_pass(unet, sample, timestep, encoder_hidden_states, added_cond_kwargs)
        h = skips.pop()  # the middle block's output
        h = self.connectors.mid(control[-1], h, control_scale=control_scale)
        # diffusers forwards an explicit upsample size only when the latent is not a multiple of 2^n.
        up_factor = 2**unet.num_upsamplers
        forward_size = any(d % up_factor for d in sample.shape[-2:])
        for i, block in enumerate(unet.up_blocks):
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attentions):
                k = len(skips) - 1
                skip = skips.pop()
                h = self.connectors.skip[k](control[k], skip, h, control_scale=control_scale)
                h = self._maybe_checkpoint(resnet, h, emb)
                if attn is not None:
                    h = self._maybe_checkpoint(
                        lambda x, a=attn: a(
                            x, encoder_hidden_states=encoder_hidden_states, return_dict=False
                        )[0],
                        h,
                    )
            if block.upsamplers is not None:
                if str(i) in self.connectors.cross_attn:
                    h = self.connectors.cross_attn[str(i)](control[k], h, control_scale=control_scale)
                size = skips[-1].shape[2:] if forward_size else None
                for upsampler in block.upsamplers:
                    h = upsampler(h, size)
        if unet.conv_norm_out is not None:
            h = unet.conv_act(unet.conv_norm_out(h))
        return unet.conv_out(h)


def parameter_counts(
    unet_config: dict = SDXL_UNET_CONFIG, transformer_layers_per_block=(1, 1, 4), cross_attn=True
) -> dict[str, int]:
    """Sizes of UNet, adaptor (incl. hint conv) and connectors, built on the meta device (no memory)."""
    cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    from supir.adaptor import AdaptorConfig

    adaptor = SupirAdaptor(AdaptorConfig(cfg, list(transformer_layers_per_block)), device="meta")
    with torch.device("meta"):
        connectors = SupirConnectors(ConnectorsConfig.from_unet(unet, cross_attn))

    def count(module):
        return sum(p.numel() for p in module.parameters())

    return {
        "unet": count(unet),
        "adaptor": count(adaptor),
        "adaptor_hint_conv": count(adaptor.hint_conv),
        "connectors": count(connectors),
        "connectors_zero_sft": count(connectors.skip) + count(connectors.mid),
        "connectors_cross_attn": count(connectors.cross_attn),
    }

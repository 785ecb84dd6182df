"""The trimmed adaptor (paper §3.1, Fig. 3(b)): a trainable copy of SDXL's encoder and middle block.

ControlNet-style, the adaptor copies the UNet's input side (conv_in, time and size/text embeddings,
down blocks, middle block) and is initialised from the UNet's weights, but keeps only part of each
transformer stack: depth [1, 1, 4] per level instead of SDXL's [1, 2, 10] (≈598M instead of 1.24B
parameters). The LQ latent enters through a zero-initialised 3×3 convolution added to conv_in's output,
so at initialisation the adaptor sees exactly what the UNet's encoder sees.

``forward`` returns the control features: the output of conv_in(+hint), every down-block residual
(one per decoder skip connection, same shapes as the UNet's skips) and the middle block's output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from schemas.errors import ConfigError
from supir.zero_sft import zero_module

ADAPTOR_WEIGHTS = "adaptor.safetensors"
ADAPTOR_CONFIG = "adaptor_config.json"


@dataclass
class AdaptorConfig:
    """The UNet config the adaptor mirrors, and the trimmed transformer depth per level."""

    unet_config: dict = field(default_factory=dict)
    transformer_layers_per_block: list[int] = field(default_factory=lambda: [1, 1, 4])

    def trimmed_unet_config(self) -> dict:
        cfg = {k: v for k, v in self.unet_config.items() if not k.startswith("_")}
        depth = list(self.transformer_layers_per_block)
        if len(depth) != len(cfg["down_block_types"]):
            raise ConfigError(
                f"adaptor depth {depth} needs one entry per UNet level ({len(cfg['down_block_types'])})"
            )
        cfg["transformer_layers_per_block"] = depth
        return cfg


def encoder_pass(
    unet,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    added_cond_kwargs: dict,
    hint: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder half of a UNet2DConditionModel (or of the adaptor's trimmed copy).

    Returns the time/text/size embedding and the features: conv_in (+ the LQ hint, when given), every
    down-block output, and the middle block's output last. The embedding code is the UNet's own.
    """
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))
    emb = emb + unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
    h = unet.conv_in(sample)
    if hint is not None:
        h = h + hint
    features = [h]
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=encoder_hidden_states)
        else:
            h, res = block(hidden_states=h, temb=emb)
        features.extend(res)
    features.append(unet.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states))
    return emb, features


class SupirAdaptor(nn.Module):
    """Trimmed control encoder + hint conv. Build with `from_unet` (training) or `from_pretrained`."""

    def __init__(self, config: AdaptorConfig, device: str | torch.device = "cpu", init_weights: bool = True):
        super().__init__()
        self.config = config
        # Build the trimmed UNet on the meta device and keep only its input side: the decoder it
        # would also allocate (~1.5B parameters at SDXL size) is never materialised.
        with torch.device("meta"):
            core = UNet2DConditionModel(**config.trimmed_unet_config())
        core.up_blocks = nn.ModuleList()
        core.conv_norm_out = core.conv_act = core.conv_out = None
        self.core = core
        in_channels = core.config.in_channels
        with torch.device("meta"):
            self.hint_conv = nn.Conv2d(in_channels, core.config.block_out_channels[0], 3, padding=1)
        if str(device) != "meta":
            self.to_empty(device=device)
            if init_weights:
                for m in self.modules():
                    if m is not self and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
            zero_module(self.hint_conv)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, transformer_layers_per_block=(1, 1, 4)) -> SupirAdaptor:
        """Trainable copy of `unet`'s encoder: each trimmed transformer stack keeps its first blocks."""
        config = AdaptorConfig(dict(unet.config), list(transformer_layers_per_block))
        device = next(unet.parameters()).device
        adaptor = cls(config, device=device, init_weights=False)
        source = unet.state_dict()
        own = adaptor.core.state_dict()
        missing = [k for k in own if k not in source]
        if missing:
            raise ValueError(f"adaptor keys not in the UNet (deeper than the UNet?): {missing[:3]}")
        adaptor.core.load_state_dict({k: source[k].detach().clone().float() for k in own})
        return adaptor.float()

    # ---- save / load: safetensors of the weights + JSON config ---------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ADAPTOR_CONFIG).write_text(json.dumps(asdict(self.config), indent=2, default=list))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, directory / ADAPTOR_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> SupirAdaptor:
        directory = Path(directory)
        config = AdaptorConfig(**json.loads((directory / ADAPTOR_CONFIG).read_text()))
        adaptor = cls(config, device=device, init_weights=False)
        adaptor.load_state_dict(load_file(directory / ADAPTOR_WEIGHTS, device=str(device)))
        return adaptor

    # ---- forward --------------------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict,
        lq_latent: torch.Tensor,
    ) -> list[torch.Tensor]:
        core = self.core
        dtype = next(self.parameters()).dtype
        sample = sample.to(dtype)
        encoder_hidden_states = encoder_hidden_states.to(dtype)
        added_cond_kwargs = {k: v.to(dtype) for k, v in added_cond_kwargs.items()}
        hint = self.hint_conv(lq_latent.to(dtype))
        _, features = encoder_pass(core, sample, timestep, encoder_hidden_states, added_cond_kwargs, hint)
        return features

    def enable_gradient_checkpointing(self) -> None:
        self.core.enable_gradient_checkpointing()

"""The released SUPIR checkpoints' key layout, mapped one to one onto our modules.

The release (`SUPIR-v0Q.ckpt`, `SUPIR-v0F.ckpt` and the community fp16 `.safetensors` copies) stores
three groups of tensors under the names of its sgm/LDM modules:

| release prefix                             | what                          | ours (state-dict prefix)  |
|--------------------------------------------|-------------------------------|---------------------------|
| ``model.control_model.``                   | control model (GLVControl)    | ``adaptor.`` (diffusers)  |
| ``model.diffusion_model.project_modules.N``| ZeroSFT / ZeroCrossAttn       | ``connectors.``           |
| ``first_stage_model.denoise_encoder.``     | degradation-robust encoder    | ``robust_encoder.``       |

Everything else with an SDXL prefix (the UNet, the VAE, the text encoders) belongs to SDXL, which
is loaded separately. The mapping is written once here, as rules from our key to the release's, and
the tables are built from our modules' own state dicts, so every one of our tensors has exactly one
release name (`Entry`). The renames:

- control model, LDM ``input_blocks.{n}`` numbering (n = 1 + level·(layers+1) + j; the downsampler
  is the last block of a level): ``conv_in`` → ``input_blocks.0.0``, ``time_embedding.linear_{1,2}``
  → ``time_embed.{0,2}``, ``add_embedding.linear_{1,2}`` → ``label_emb.0.{0,2}``, resnets →
  ``input_blocks.n.0`` (`RESNET` renames), attentions → ``input_blocks.n.1`` (same inner names),
  downsamplers → ``input_blocks.n.0.op``, the middle block → ``middle_block.{0,1,2}``, the hint conv
  → ``input_hint_block.0``.
- connectors: the release keeps one list, ``project_modules``, in decoder-skip order with each
  cross-attention connector just before the ZeroSFT of the skip whose control feature it reads, and
  the middle block's ZeroSFT last (SDXL: 12 modules, cross-attention at 3 and 7). `SFT`/`CROSS_ATTN`
  rename their parts.
- robust encoder: diffusers' VAE encoder names → LDM's (``down.i.block.j``, ``mid.block_1``,
  ``mid.attn_1``...). The LDM middle attention uses 1×1 convolutions where diffusers has linear
  layers: same numbers, shape [C, C, 1, 1] there, [C, C] here (``Entry.conv1x1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ADAPTOR_PREFIX = "model.control_model."
CONNECTOR_PREFIX = "model.diffusion_model.project_modules."
ENCODER_PREFIX = "first_stage_model.denoise_encoder."
SUPIR_PREFIXES = (ADAPTOR_PREFIX, CONNECTOR_PREFIX, ENCODER_PREFIX)
# SDXL's own tensors in a merged file: loaded from SDXL's own weights, skipped here.
SDXL_PREFIXES = ("model.diffusion_model.", "conditioner.", "first_stage_model.", "denoiser.")

RESNET = {  # diffusers ResnetBlock2D -> LDM ResBlock
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
SFT = {
    "norm": "param_free_norm",
    "mlp_shared.0": "mlp_shared.0",
    "zero_mul": "zero_mul",
    "zero_add": "zero_add",
    "zero_conv": "zero_conv",
}
CROSS_ATTN = {
    "norm_x": "norm1",
    "norm_c": "norm2",
    "attn.to_q": "attn.to_q",
    "attn.to_k": "attn.to_k",
    "attn.to_v": "attn.to_v",
    "attn.to_out.0": "attn.to_out.0",
}
EMBEDDINGS = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "hint_conv": "input_hint_block.0",
    "mid_block.resnets.0": "middle_block.0",
    "mid_block.attentions.0": "middle_block.1",
    "mid_block.resnets.1": "middle_block.2",
}


@dataclass(frozen=True)
class Entry:
    """One tensor: its key in our state dict and in the release; `conv1x1`: reshape [C,C] <-> [C,C,1,1]."""

    ours: str
    release: str
    conv1x1: bool = False


def _rename(tail: str, table: dict[str, str]) -> str:
    """Rename the leading module path of `tail` ("norm1.weight") by the longest matching entry."""
    for name in sorted(table, key=len, reverse=True):
        if tail == name or tail.startswith(name + "."):
            return table[name] + tail[len(name) :]
    raise KeyError(tail)


def _split(key: str, prefix: str) -> tuple[str, str] | None:
    if key == prefix or key.startswith(prefix + "."):
        return prefix, key[len(prefix) + 1 :]
    return None


def adaptor_release_key(key: str, layers_per_block: int) -> str:
    """Our adaptor key (``core.…`` or ``hint_conv.…``) -> the release's (without its prefix)."""
    key = key.removeprefix("core.")
    per_level = layers_per_block + 1
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key)
    if m:
        level, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
        block = 1 + level * per_level + j
        if kind == "resnets":
            return f"input_blocks.{block}.0.{_rename(tail, RESNET)}"
        if kind == "attentions":
            return f"input_blocks.{block}.1.{tail}"
        return f"input_blocks.{(level + 1) * per_level}.0.op.{tail.removeprefix('conv.')}"
    for ours, release in sorted(EMBEDDINGS.items(), key=lambda kv: len(kv[0]), reverse=True):
        split = _split(key, ours)
        if split:
            tail = split[1]
            if ours.startswith("mid_block.resnets"):
                tail = _rename(tail, RESNET)
            return f"{release}.{tail}"
    raise KeyError(f"no release name for adaptor key {key!r}")


def connector_order(n_skips: int, cross_attn_controls: dict[str, int]) -> list[str]:
    """Our connector module names in the release's ``project_modules`` order.

    `cross_attn_controls` maps each ZeroCrossAttn (our up-block name) to the control feature it reads.
    """
    before = {k: name for name, k in cross_attn_controls.items()}
    order = []
    for k in range(n_skips):
        if k in before:
            order.append(f"cross_attn.{before[k]}")
        order.append(f"skip.{k}")
    return order + ["mid"]


def cross_attn_controls(up_blocks: list[str], levels: int, layers_per_block: int) -> dict[str, int]:
    """Up block i's cross-attention reads the control feature of the first skip of its level."""
    return {i: (levels - 1 - int(i)) * (layers_per_block + 1) for i in up_blocks}


def connector_release_key(key: str, order: list[str]) -> str:
    """Our connector key (``skip.3.norm.weight``) -> the release's (``4.param_free_norm.weight``)."""
    parts = key.split(".")
    cut = 1 if parts[0] == "mid" else 2
    module, tail = ".".join(parts[:cut]), ".".join(parts[cut:])
    table = CROSS_ATTN if module.startswith("cross_attn") else SFT
    return f"{order.index(module)}.{_rename(tail, table)}"


def encoder_release_key(key: str) -> tuple[str, bool]:
    """Our robust-encoder key (``encoder.…``) -> (release key, is a 1×1 conv there)."""
    key = key.removeprefix("encoder.")
    m = re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"down.{m[1]}.block.{m[2]}.{_rename(m[3], VAE_RESNET)}", False
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"down.{m[1]}.downsample.conv.{m[2]}", False
    m = re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", key)
    if m:
        return f"mid.block_{int(m[1]) + 1}.{_rename(m[2], VAE_RESNET)}", False
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key)
    if m:
        release = _rename(m[1], VAE_ATTENTION)
        return f"mid.attn_1.{release}", release.endswith("weight") and not release.startswith("norm")
    for ours, release in (("conv_in", "conv_in"), ("conv_norm_out", "norm_out"), ("conv_out", "conv_out")):
        split = _split(key, ours)
        if split:
            return f"{release}.{split[1]}", False
    raise KeyError(f"no release name for encoder key {key!r}")


def adaptor_entries(keys, layers_per_block: int) -> list[Entry]:
    return [Entry(f"adaptor.{k}", ADAPTOR_PREFIX + adaptor_release_key(k, layers_per_block)) for k in keys]


def connector_entries(keys, order: list[str]) -> list[Entry]:
    return [Entry(f"connectors.{k}", CONNECTOR_PREFIX + connector_release_key(k, order)) for k in keys]


def encoder_entries(keys) -> list[Entry]:
    entries = []
    for k in keys:
        release, conv1x1 = encoder_release_key(k)
        entries.append(Entry(f"robust_encoder.{k}", ENCODER_PREFIX + release, conv1x1))
    return entries

"""Import the released SUPIR checkpoints into our model, and export ours back to the release layout.

    python -m supir.convert import SUPIR-v0Q.ckpt --pretrained SDXL_DIR --out runs/v0q
    python -m supir.convert export runs/sdxl/checkpoints/step-002000 --pretrained SDXL_DIR \\
        --out my-supir.safetensors [--fp16]

Import reads `.ckpt` files with ``torch.load(weights_only=True)`` (a file that needs pickle code to
load is refused, never run) and `.safetensors` files (the community fp16 copies), maps every tensor
by `supir.release_layout`, checks every shape and builds our model in the released configuration:
the control model's transformer depth is read from the file ([1, 2, 10] for v0Q/v0F), the
connectors take the released form. SDXL itself comes from its own weights (a diffusers folder);
SDXL tensors in a merged file are skipped. The result is a folder `SupirUNet.from_pretrained`,
`supir.restore --checkpoint` and the trainer's ``init_from:`` read (plus ``robust_encoder.safetensors``
when the file holds E_dr).

Export writes the same layout, so the official test.py / gradio demo and ComfyUI-SUPIR load it
(they load non-strictly: a control model trimmed to [1, 1, 4] must be announced to them, see the
note printed and stored in the file's metadata). ``import(export(x)) == x`` bit for bit in float32.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from schemas.errors import CheckpointError, SupirDataError
from supir import release_layout as layout
from supir.adaptor import AdaptorConfig, SupirAdaptor
from supir.model import ConnectorsConfig, SupirConnectors, SupirUNet
from supir.robust_encoder import RobustEncoder


@dataclass
class Imported:
    """An imported release checkpoint: our model, E_dr (if the file holds one), what was mapped."""

    model: SupirUNet
    robust_encoder: RobustEncoder | None
    depth: list[int]
    counts: dict[str, int] = field(default_factory=dict)  # tensors per group, SDXL tensors skipped


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or a `.ckpt`/`.pt`/`.pth` file (``state_dict`` unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} needs pickle code to load, which would run code from the file; refused. If you "
            "trust its source, re-save its tensors as safetensors and import that instead. "
            f"({str(exc).splitlines()[0]})"
        ) from None
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    odd = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if odd:
        raise CheckpointError(f"{path}: entries that are not tensors: {odd[:10]}")
    return obj


def _unet_depth(unet_config: dict) -> list[int]:
    depth = unet_config["transformer_layers_per_block"]
    levels = len(unet_config["block_out_channels"])
    return [depth] * levels if isinstance(depth, int) else list(depth)


def infer_depth(state: dict, unet_config: dict) -> list[int]:
    """The control model's transformer depth per level, as stored (levels without attention: the UNet's)."""
    per_level = unet_config["layers_per_block"] + 1
    depth = _unet_depth(unet_config)

    def count(prefix: str) -> int:
        found = {k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)}
        return len(found)

    for level in range(len(depth)):
        n = count(f"{layout.ADAPTOR_PREFIX}input_blocks.{1 + level * per_level}.1.transformer_blocks.")
        depth[level] = n or depth[level]
    mid = count(f"{layout.ADAPTOR_PREFIX}middle_block.1.transformer_blocks.")
    if mid and mid != depth[-1]:
        raise CheckpointError(
            f"control model: middle block depth {mid} differs from the last level's {depth[-1]}"
        )
    return depth


def layout_entries(adaptor: SupirAdaptor, connectors: SupirConnectors, encoder_keys=()) -> list[layout.Entry]:
    """Every one of our tensors with its release name (see supir.release_layout)."""
    cfg = adaptor.config.unet_config
    controls = layout.cross_attn_controls(
        list(connectors.config.cross_attn), len(cfg["block_out_channels"]), cfg["layers_per_block"]
    )
    order = layout.connector_order(len(connectors.config.skip_channels), controls)
    return (
        layout.adaptor_entries(adaptor.state_dict().keys(), cfg["layers_per_block"])
        + layout.connector_entries(connectors.state_dict().keys(), order)
        + layout.encoder_entries(encoder_keys)
    )


def _check(state: dict, entries: list[layout.Entry], own: dict) -> None:
    expected = {e.release: e for e in entries}
    missing = sorted(set(expected) - set(state))
    unknown = sorted(k for k in state if k.startswith(layout.SUPIR_PREFIXES) and k not in expected)
    unknown += sorted(k for k in state if not k.startswith(layout.SUPIR_PREFIXES + layout.SDXL_PREFIXES))
    shapes = []
    for key, entry in expected.items():
        if key in state:
            want = tuple(own[entry.ours].shape) + ((1, 1) if entry.conv1x1 else ())
            if tuple(state[key].shape) != want:
                shapes.append(f"{key}: file {tuple(state[key].shape)}, model {want}")
    problems = []
    for title, items in (("missing", missing), ("unknown", unknown), ("misshapen", shapes)):
        if items:
            problems.append(
                f"{len(items)} {title}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else "")
            )
    if problems:
        raise CheckpointError("checkpoint does not match the release layout: " + "; ".join(problems))


def import_release(source, unet, vae=None, depth=None, device=None) -> Imported:
    """Build our model (adaptor + connectors around the frozen `unet`) from a release checkpoint.

    `source`: a path or a state dict in the release layout. `depth`: the adaptor depth the caller
    expects (e.g. the training config's); a different depth in the file is an error. `vae`: needed
    when the file holds the robust encoder (it gives the architecture and the shared quant_conv).
    `device`: where our modules go (default: the UNet's; a UNet on the meta device gives CPU).
    """
    state = read_state_dict(source) if isinstance(source, (str, Path)) else source
    unet_config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    found = infer_depth(state, unet_config)
    if depth is not None and list(depth) != found:
        raise CheckpointError(
            f"the checkpoint's control model has transformer depth {found}, the configuration asks for "
            f"{list(depth)}: set model.adaptor_depth={found} (supir/configs/supir-v0.yaml for the release)"
        )
    device = torch.device(device or next(unet.parameters()).device)
    device = torch.device("cpu") if device.type == "meta" else device
    adaptor = SupirAdaptor(AdaptorConfig(unet_config, found), device=device, init_weights=False)
    modules = {k.split(".")[3] for k in state if k.startswith(layout.CONNECTOR_PREFIX)}
    plain = ConnectorsConfig.from_unet(unet, cross_attn=False)
    connectors = SupirConnectors(
        ConnectorsConfig.from_unet(unet, len(modules) > len(plain.skip_channels) + 1)
    )
    connectors = connectors.to(device)
    has_encoder = any(k.startswith(layout.ENCODER_PREFIX) for k in state)
    if has_encoder and vae is None:
        raise CheckpointError("the checkpoint holds the robust encoder: pass the SDXL VAE to import it")
    encoder = RobustEncoder(vae) if has_encoder else None
    own = {f"adaptor.{k}": v for k, v in adaptor.state_dict().items()}
    own |= {f"connectors.{k}": v for k, v in connectors.state_dict().items()}
    if encoder is not None:
        own |= {f"robust_encoder.{k}": v for k, v in encoder.state_dict().items()}
    entries = layout_entries(adaptor, connectors, encoder.state_dict().keys() if encoder else ())
    _check(state, entries, own)
    loaded: dict[str, dict] = {"adaptor": {}, "connectors": {}, "robust_encoder": {}}
    for e in entries:
        group, _, key = e.ours.partition(".")
        value = state[e.release].reshape(own[e.ours].shape) if e.conv1x1 else state[e.release]
        loaded[group][key] = value.to(device=device, dtype=own[e.ours].dtype)
    adaptor.load_state_dict(loaded["adaptor"])
    connectors.load_state_dict(loaded["connectors"])
    if encoder is not None:
        encoder.load_state_dict(loaded["robust_encoder"])
        encoder.eval().requires_grad_(False)
    counts = {group: len(values) for group, values in loaded.items()}
    counts["sdxl_skipped"] = sum(1 for k in state if not k.startswith(layout.SUPIR_PREFIXES))
    return Imported(SupirUNet(unet, adaptor, connectors), encoder, found, counts)


def depth_note(model: SupirUNet) -> str | None:
    """What the official loader must be told when the adaptor is not at the UNet's (released) depth."""
    depth = list(model.adaptor.config.transformer_layers_per_block)
    full = _unet_depth(model.adaptor.config.unet_config)
    if depth == full:
        return None
    return (
        f"control model trimmed to transformer depth {depth} (the UNet's is {full}): set "
        f"control_stage_config.params.transformer_depth: {depth} in the official options/SUPIR_v0.yaml "
        "(or ComfyUI-SUPIR's copy); its loader is non-strict and would leave the missing blocks random"
    )


def export_release(model: SupirUNet, hint_encoder=None, dtype: torch.dtype | None = None):
    """(state dict in the release layout, notes). `hint_encoder`: our RobustEncoder or the plain VAE.

    The release's LQ hint always comes from ``denoise_encoder``: a model trained on the plain VAE's
    latents exports that VAE's encoder there, which reproduces its behaviour exactly.
    """
    if model.connectors.config.residual:
        raise CheckpointError(
            "these connectors use the residual (identity-at-init) form, which the release cannot express"
        )
    notes = [n for n in [depth_note(model)] if n]
    own = {f"adaptor.{k}": v for k, v in model.adaptor.state_dict().items()}
    own |= {f"connectors.{k}": v for k, v in model.connectors.state_dict().items()}
    encoder_state = {}
    if isinstance(hint_encoder, RobustEncoder):
        encoder_state = hint_encoder.state_dict()
    elif hint_encoder is not None:
        encoder_state = {f"encoder.{k}": v for k, v in hint_encoder.encoder.state_dict().items()}
    else:
        notes.append("no denoise_encoder exported: the official code would use an untrained copy")
    own |= {f"robust_encoder.{k}": v for k, v in encoder_state.items()}
    state = {}
    for e in layout_entries(model.adaptor, model.connectors, encoder_state.keys()):
        value = own[e.ours].detach()
        value = value.reshape(*value.shape, 1, 1) if e.conv1x1 else value
        state[e.release] = value.to(device="cpu", dtype=dtype or value.dtype).contiguous().clone()
    return state, notes


def save_release(path: str | Path, state: dict, notes: list[str], depth: list[int]) -> Path:
    """`.safetensors` (notes in its metadata) or `.ckpt` (``{"state_dict": ...}``), plus `<path>.json`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"supir_transformer_depth": json.dumps(depth), "supir_notes": json.dumps(notes)}
    if path.suffix.lower() == ".safetensors":
        save_file(state, path, metadata=meta)
    else:
        torch.save({"state_dict": state}, path)
    path.with_name(path.name + ".json").write_text(
        json.dumps({"transformer_depth": depth, "tensors": len(state), "notes": notes}, indent=2) + "\n"
    )
    return path


def _load_unet_skeleton(pretrained: str):
    """SDXL's UNet on the meta device: its config gives every shape, no weights are read."""
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(pretrained, subfolder="unet")
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def _load_vae(pretrained: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(pretrained, subfolder="vae").eval().requires_grad_(False)


def _import(args) -> None:
    imported = import_release(
        args.checkpoint, _load_unet_skeleton(args.pretrained), _load_vae(args.pretrained), args.depth
    )
    imported.model.save_trainable(args.out)
    if imported.robust_encoder is not None:
        imported.robust_encoder.save_pretrained(args.out)
    info = {"source": str(args.checkpoint), "transformer_depth": imported.depth, "tensors": imported.counts}
    (Path(args.out) / "imported.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"imported {args.checkpoint}: depth {imported.depth}, tensors {imported.counts}; wrote {args.out}")


def _export(args) -> None:
    from supir.robust_encoder import WEIGHTS

    folder = Path(args.checkpoint)
    model = SupirUNet.__new__(SupirUNet)  # trainable parts only: the frozen UNet is not needed
    torch.nn.Module.__init__(model)
    model.adaptor, model.connectors = (
        SupirAdaptor.from_pretrained(folder),
        SupirConnectors.from_pretrained(folder),
    )
    vae = _load_vae(args.pretrained)
    hint = RobustEncoder.from_pretrained(folder, vae) if (folder / WEIGHTS).exists() else vae
    state, notes = export_release(model, hint, torch.float16 if args.fp16 else None)
    save_release(args.out, state, notes, list(model.adaptor.config.transformer_layers_per_block))
    print(f"exported {len(state)} tensors to {args.out}")
    for note in notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m supir.convert", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="release .ckpt/.safetensors -> our checkpoint folder")
    imp.add_argument("checkpoint", type=Path)
    imp.add_argument("--depth", type=json.loads, default=None, help="expected adaptor depth, e.g. [1,2,10]")
    exp = sub.add_parser("export", help="our checkpoint folder -> release .safetensors/.ckpt")
    exp.add_argument("checkpoint", type=Path)
    exp.add_argument("--fp16", action="store_true", help="store float16 (as the community copies)")
    for sp in (imp, exp):
        sp.add_argument("--pretrained", required=True, help="SDXL diffusers folder (its unet/ config, vae/)")
        sp.add_argument("--out", required=True, type=Path)
        sp.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    try:
        (_import if args.command == "import" else _export)(args)
    except (SupirDataError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

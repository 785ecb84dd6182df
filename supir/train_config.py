"""Typed training configuration: YAML file + ``section.key=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from schemas.errors import ConfigError


@dataclass
class ModelConfig:
    pretrained: str = "stabilityai/stable-diffusion-xl-base-1.0"  # diffusers folder or hub id
    build_tiny: bool = False  # CPU demo/tests: build a tiny random SDXL at `pretrained` if it is missing
    adaptor_depth: list[int] = field(default_factory=lambda: [1, 1, 4])  # transformer depth per level
    cross_attn_connectors: bool = True
    residual_connectors: bool = False  # identity-at-init connectors; not the release's form, not exportable
    robust_encoder: str | None = None  # folder from `python -m supir.robust_encoder`; None: SDXL's VAE
    gradient_checkpointing: bool = False
    frozen_dtype: str = "float32"  # dtype of the frozen UNet/text encoders ("bfloat16" on GPUs)


@dataclass
class DataConfig:
    shards: str = ""  # a shard manifest (*.manifest.json), a brace pattern, or a tar
    split: str = "train"
    val_shards: str | None = None  # default: `shards` with split `val_split`, when it is a manifest
    val_split: str = "val"
    crop_size: int = 512  # the paper's 512×512 training crops
    resolution: int | None = None  # train at this size (resized crops); None: crop_size
    batch_size: int = 4
    caption_dropout: float = 0.05
    shuffle_buffer: int = 1000
    resampled: bool = False  # infinite resampling (equal-length ranks in multi-GPU runs)
    num_workers: int = 2
    cached_text: bool = False  # use the shards' txtemb/txtpool members; text encoders stay on the CPU


@dataclass
class OptimConfig:
    lr: float = 1e-5  # the paper's AdamW learning rate
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    name: str = "adamw"  # "adamw" (fused on CUDA) or "adamw8bit" (bitsandbytes: 2 bytes of state per parameter)


@dataclass
class ValConfig:
    every: int = 0  # steps between validations; 0 disables
    batches: int = 1
    sampler_steps: int = 20
    cfg_scale: float = 7.5
    tau_r: float = 4.0


@dataclass
class LoraSettings:
    """`lora:` — LoRA on the adaptor (supir/lora.py); rank 0 trains the adaptor fully."""

    rank: int = 0
    alpha: float | None = None  # default: rank (scale 1)
    targets: list[str] = field(default_factory=lambda: ["attention", "feed_forward"])  # and/or "conv"
    dropout: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.rank > 0


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    steps: int = 1000
    seed: int = 0
    mixed_precision: str = "no"  # "bf16": autocast on CUDA
    output_dir: str = "runs/supir"
    log_every: int = 10
    checkpoint_every: int = 500  # 0: only at the end
    resume: str | None = "auto"  # "auto": latest checkpoint in output_dir; a path; None: start fresh
    # Weights to start from (before any resume): a released SUPIR .ckpt/.safetensors (its E_dr becomes
    # the LQ hint encoder) or one of our checkpoint folders. None: the adaptor copies SDXL's encoder.
    init_from: str | None = None
    device: str = "auto"  # "auto": this rank's CUDA device if any, else CPU
    dist_backend: str = "auto"  # under torchrun: "auto" = nccl with CUDA, else gloo; or "nccl" / "gloo"


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        sub = (
            fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        )
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, str(fields[name].type), f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value, annotation: str, where: str):
    # YAML reads "1e-5" (no dot) as a string: accept it where the field is a float.
    if isinstance(value, str) and annotation.startswith("float"):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and annotation.startswith("float"):
        return float(value)
    return value


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config and apply ``a.b=value`` overrides (values parsed as YAML scalars)."""
    tree: dict = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set(tree, key.strip(), yaml.safe_load(raw))
    config = _build(TrainConfig, tree, "config")
    if config.optim.grad_accum < 1 or config.data.batch_size < 1 or config.steps < 0:
        raise ConfigError("optim.grad_accum and data.batch_size must be ≥ 1 and steps ≥ 0")
    if config.dist_backend not in ("auto", "nccl", "gloo"):
        raise ConfigError(f"dist_backend must be 'auto', 'nccl' or 'gloo', got {config.dist_backend!r}")
    if config.mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"mixed_precision must be 'no' or 'bf16', got {config.mixed_precision!r}")
    return config


def config_to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)

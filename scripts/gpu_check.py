"""One prepared GPU check of every GPU path the product has, for a lent GPU machine.

    python scripts/gpu_check.py OUT_DIR            # real sizes, on CUDA
    python scripts/gpu_check.py OUT_DIR --tiny     # the same code on tiny configs (CPU dry run)

Sections (each recorded in OUT_DIR/gpu_check.json as soon as it ends; a failing section records its
error and the next one runs):
  env         torch / CUDA / device
  train_real  SUPIR model from the real SDXL UNet config (random weights): bf16 AdamW step at 512²,
              batch 1/4/8 (s/step, peak memory) and a 10-step restoration-guided sampler run at 1024²
              (tests/benchmarks/train_gpu.py)
  sdxl_folder a random real-size SDXL saved in diffusers format (the shape of
              stabilityai/stable-diffusion-xl-base-1.0), so the next sections load it through the
              same from_pretrained code as a real run
  trainer     `python -m supir.train --config supir/configs/sdxl.yaml` on that folder and the demo
              train shards: the recipe's code path (bf16 frozen SDXL, gradient checkpointing, reader
              workers, validation sampler)
  caption     pipelines.caption.command.caption_images with a random LLaVA-1.5-13B-shaped model in bf16:
              batched greedy generation of a fixed number of tokens (images/s at batch 1/8/32)
  negatives   pipelines.negatives.command: load_sdedit_pipeline on the folder + sdedit at 1024², strength
              0.5, 50 steps (25 run), CFG 7.5 (s/image at batch 1/4)
  degradation supir.degradation.apply_batch_torch on 512² GT crops (samples/s at batch 16/64)
  trainer_resume  the trainer command again with more steps: resumes from its checkpoint
  caption_auto  the caption stage's automatic batch (--batch-size 0) from free memory, at 256 tokens
  trainer_ddp the trainer under torchrun: one rank per GPU over NCCL on a multi-GPU machine, else
              2 ranks sharing the one GPU over gloo
  eval        `supir-data eval --settings release` with a random released-shape SUPIR (full [1, 2, 10]
              control model) on that folder: 4 photos x 5 Table 1 degradations at 1024² (s/image,
              s/image/step; tests/benchmarks/eval_gpu.py). `--only sdxl_folder,eval` runs it alone.

Random weights everywhere: the numbers are speed and memory, never quality.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARDS = ROOT / "demo" / "train-shards"

# stabilityai/stable-diffusion-xl-base-1.0: vae/, text_encoder/, text_encoder_2/ configs.
SDXL_VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
CLIP_BIGG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
# llava-hf/llava-1.5-13b-hf: Vicuna-13B text model, CLIP ViT-L/14-336 tower.
LLAVA_13B_TEXT = {
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
    "vocab_size": 32064,
    "max_position_embeddings": 4096,
}
LLAVA_VISION = {
    "image_size": 336,
    "patch_size": 14,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "projection_dim": 768,
}


class Check:
    def __init__(self, out: Path, tiny: bool, batches: dict[str, tuple[int, ...]] | None = None):
        self.out, self.tiny = out, tiny
        self.batches = batches or {}
        self.device = "cpu" if tiny else "cuda"
        self.results: dict = {"mode": "tiny (CPU dry run)" if tiny else "real sizes"}
        self.sdxl: Path | None = None

    def record(self, name: str, value) -> None:
        self.results[name] = value
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2) + "\n")

    def run(self, name: str, fn) -> None:
        print(f"== {name}", flush=True)
        tic = time.perf_counter()
        try:
            value = fn()
            value["section_seconds"] = round(time.perf_counter() - tic, 1)
        except Exception as exc:  # noqa: BLE001 - recorded; the next section still runs
            traceback.print_exc()
            value = {
                "error": f"{type(exc).__name__}: {exc}"[:2000],
                "section_seconds": round(time.perf_counter() - tic, 1),
            }
        print(json.dumps(value, indent=2), flush=True)
        self.record(name, value)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.device == "cuda" else None

    # ---------------------------------------------------------------------------------- sections
    def env(self) -> dict:
        out = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.version.cuda,
            "cpu_count": os.cpu_count(),
        }
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out.update(
                device=p.name,
                memory_gib=round(p.total_memory / 2**30, 1),
                sm_count=p.multi_processor_count,
                bf16=torch.cuda.is_bf16_supported(),
            )
        for mod in ("diffusers", "transformers", "webdataset", "duckdb"):
            try:
                out[mod] = __import__(mod).__version__
            except Exception as exc:  # noqa: BLE001
                out[mod] = f"missing: {exc}"
        return out

    def train_real(self) -> dict:
        from tests.benchmarks.train_gpu import measure

        if self.tiny:
            from supir.tiny_sdxl import TINY_UNET_CONFIG

            return measure(
                TINY_UNET_CONFIG,
                depth=(1, 1),
                device="cpu",
                batches=(1, 2),
                train_px=64,
                sample_px=64,
                sample_steps=3,
                timed_steps=2,
            )
        return measure(batches=self.batches.get("train", (1, 4, 8)))

    def sdxl_folder(self) -> dict:
        out = Path("/tmp/gpu-check-sdxl") if not self.tiny else self.out / "sdxl"
        tic = time.perf_counter()
        if self.tiny:
            from supir.tiny_sdxl import build_tiny_sdxl

            build_tiny_sdxl(out)
        else:
            build_random_sdxl(out, self.device)
        self.sdxl = out
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        return {
            "path": str(out),
            "gib_on_disk": round(size / 2**30, 2),
            "build_and_save_s": round(time.perf_counter() - tic, 1),
        }

    def trainer(self) -> dict:
        shutil.rmtree(self._run_dir(), ignore_errors=True)  # a rerun on a warm machine starts afresh
        return self._train_runs(self._trainer_command(), [("first", ["steps=6", "val.every=6"])])

    def _trainer_command(self) -> list[str]:
        if self.sdxl is None:
            raise RuntimeError("no SDXL folder (the sdxl_folder section failed)")
        run_dir = self._run_dir()
        base = [
            sys.executable,
            "-m",
            "supir.train",
            "--config",
            "supir/configs/sdxl.yaml",
            f"model.pretrained={self.sdxl}",
            f"data.shards={SHARDS}/supir-train-{{000000..000001}}.tar",
            f"data.val_shards={SHARDS}/supir-val-000000.tar",
            "data.shuffle_buffer=16",
            "data.num_workers=2",
            "optim.warmup_steps=0",
            "log_every=1",
            "val.batches=1",
            "val.sampler_steps=10",
            "checkpoint_every=0",
            f"output_dir={run_dir}",
            "resume=auto",
            "optim.grad_accum=2",
            "data.batch_size=4",
        ]
        if self.tiny:
            base += ["model.adaptor_depth=[1,1]", "data.resolution=64", "device=cpu", "data.num_workers=0"]
        return base

    def _run_dir(self) -> Path:
        return self.out / "run-sdxl" if self.tiny else Path("/tmp/gpu-check-run")

    def trainer_resume(self) -> dict:
        """The same command with more steps: resumes from the first run's checkpoint."""
        base = self._trainer_command()
        return self._train_runs(base, [("resumed", ["steps=8", "val.every=0"])])

    def trainer_ddp(self) -> dict:
        """DDP through torchrun: one rank per GPU with NCCL when the machine has several GPUs (the
        recipe's multi-GPU path); with one GPU, two ranks share it over gloo (NCCL refuses two ranks on
        one device): DDP wrapping, per-rank data, all-reduce and barriers on CUDA tensors, not NCCL."""
        gpus = 0 if self.tiny else torch.cuda.device_count()
        ranks = min(gpus, 8) if gpus >= 2 else 2
        base = self._trainer_command()
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(ranks),
        ]
        base = [*launcher, *base[1:]]
        base = [a for a in base if not a.startswith("output_dir=")]
        run_dir = self.out / "run-ddp" if self.tiny else Path("/tmp/gpu-check-ddp")
        shutil.rmtree(run_dir, ignore_errors=True)
        if gpus >= 2:
            device, backend = "auto", "nccl"
        else:
            device, backend = ("cpu" if self.tiny else "cuda:0"), "gloo"
        extra = [
            f"output_dir={run_dir}",
            f"device={device}",
            f"dist_backend={backend}",
            "steps=4",
            "val.every=0",
            "optim.grad_accum=1",
        ]
        return self._train_runs(base, [(f"ddp_{ranks}_ranks_{backend}", extra)])

    def _train_runs(self, base: list[str], runs) -> dict:
        out = {}
        for name, extra in runs:
            tic = time.perf_counter()
            proc = subprocess.run([*base, *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
            (self.out / f"trainer_{name}.log").write_text(proc.stdout + proc.stderr)
            lines = _kept_lines(proc.stdout)[-15:] + _kept_lines(proc.stderr)[-10:]
            out[name] = {
                "returncode": proc.returncode,
                "wall_s": round(time.perf_counter() - tic, 1),
                "output_tail": lines[-25:],
            }
            print("\n".join(lines[-25:]), flush=True)
            if proc.returncode:
                out["error"] = f"{name}: exit {proc.returncode}"
                break
        return out

    def caption(self) -> dict:
        model, processor, build_s = self._random_llava()
        return self._caption_batches(model, processor, build_s)

    def caption_auto(self) -> dict:
        """`--batch-size 0`: the batch the actor would pick from free memory, run at full length."""
        from pipelines.caption.command import (
            CaptionConfig,
            auto_batch_size,
            caption_images,
            kv_cache_bytes_per_image,
        )

        model, processor, _ = self._random_llava()
        tokens = 256  # the stage's default --max-new-tokens
        model.generation_config.min_new_tokens = tokens
        cfg = CaptionConfig(model="random-llava-1.5-13b", max_new_tokens=tokens)
        free = torch.cuda.mem_get_info()[0] if self.device == "cuda" else None
        per_image = kv_cache_bytes_per_image(model, processor, cfg)
        batch = auto_batch_size(
            model, processor, cfg, free_bytes=free if self.device == "cuda" else 64 * per_image
        )
        self.reset_peak()
        self.sync()
        tic = time.perf_counter()
        gens = caption_images(model, processor, gt_images(batch), cfg)
        self.sync()
        s = time.perf_counter() - tic
        return {
            "free_gib_before": round(free / 2**30, 1) if free else None,
            "kv_estimate_gib_per_image": round(per_image / 2**30, 3),
            "auto_batch": batch,
            "new_tokens": tokens,
            "seconds": round(s, 2),
            "images_per_s": round(batch / s, 3),
            "tokens_generated": sum(g.n_tokens for g in gens),
            "peak_memory_gib": self.peak(),
        }

    def _random_llava(self):
        from transformers import (
            CLIPImageProcessor,
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaProcessor,
        )

        from pipelines.devtools.tiny_models import IMAGE_TOKEN, SPECIAL_TOKENS, _tiny_tokenizer

        tokenizer = _tiny_tokenizer()
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [*SPECIAL_TOKENS, IMAGE_TOKEN]}
        vision = dict(LLAVA_VISION)
        text = dict(LLAVA_13B_TEXT)
        if self.tiny:
            vision.update(
                image_size=56,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                projection_dim=32,
            )
            text.update(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                vocab_size=1000,
            )
        side = vision["image_size"]
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessor(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            ),
            tokenizer=tokenizer,
            patch_size=vision["patch_size"],
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        config = LlavaConfig(
            text_config={
                "model_type": "llama",
                **text,
                "bos_token_id": ids["<s>"],
                "eos_token_id": ids["</s>"],
                "pad_token_id": ids["<pad>"],
            },
            vision_config={"model_type": "clip_vision_model", **vision},
            image_token_index=ids[IMAGE_TOKEN],
            image_seq_length=(side // vision["patch_size"]) ** 2,
            pad_token_id=ids["<pad>"],
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
        dtype = torch.float32 if self.tiny else torch.bfloat16
        tic = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(self.device):
            model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
        return model, processor, time.perf_counter() - tic

    def _caption_batches(self, model, processor, build_s: float) -> dict:
        from pipelines.caption.command import CaptionConfig, caption_images

        tokens = 128
        model.generation_config.min_new_tokens = tokens  # random weights: fix the caption length
        cfg = CaptionConfig(model="random-llava-1.5-13b", max_new_tokens=tokens)
        images = gt_images(max(self.batches.get("caption", (32,))))
        out = {
            "model": "llava-1.5-13b shape, random weights, bf16" if not self.tiny else "tiny",
            "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
            "build_s": round(build_s, 1),
            "new_tokens_per_caption": tokens,
            "batches": {},
        }
        caption_images(model, processor, images[:2], cfg)  # warm-up
        for batch in self.batches.get("caption", (1, 8, 32)) if not self.tiny else (1, 4):
            self.reset_peak()
            self.sync()
            tic = time.perf_counter()
            gens = caption_images(model, processor, images[:batch], cfg)
            self.sync()
            s = time.perf_counter() - tic
            out["batches"][str(batch)] = {
                "seconds": round(s, 2),
                "images_per_s": round(batch / s, 3),
                "tokens_generated": sum(g.n_tokens for g in gens),
                "peak_memory_gib": self.peak(),
            }
        best = max(v["images_per_s"] for v in out["batches"].values())
        out["gpu_hours_per_million_images_at_best_batch"] = round(1e6 / best / 3600, 1)
        return out

    def negatives(self) -> dict:
        from pipelines.negatives.command import (
            NegativeConfig,
            fit_source,
            load_sdedit_pipeline,
            sdedit,
            size_multiple,
        )

        if self.sdxl is None:
            raise RuntimeError("no SDXL folder (the sdxl_folder section failed)")
        resolution = 64 if self.tiny else 1024
        cfg = NegativeConfig(model=str(self.sdxl), resolution=resolution, steps=4 if self.tiny else 50)
        tic = time.perf_counter()
        pipe = load_sdedit_pipeline(cfg, self.device)
        out = {
            "load_s": round(time.perf_counter() - tic, 1),
            "dtype": str(pipe.unet.dtype),
            "resolution": resolution,
            "strength": cfg.strength,
            "steps": cfg.steps,
            "guidance": cfg.guidance,
            "batches": {},
        }
        multiple = size_multiple(pipe)
        batches = self.batches.get("negatives", (1, 4))
        images = [fit_source(im, resolution, multiple) for im in gt_images(max(batches))]
        sdedit(pipe, images[:1], [0], cfg)  # warm-up
        for batch in batches:
            self.reset_peak()
            self.sync()
            tic = time.perf_counter()
            result = sdedit(pipe, images[:batch], list(range(batch)), cfg)
            self.sync()
            s = time.perf_counter() - tic
            out["batches"][str(batch)] = {
                "seconds": round(s, 2),
                "seconds_per_image": round(s / batch, 3),
                "peak_memory_gib": self.peak(),
                "output_size": list(result[0].size),
            }
        best = min(v["seconds_per_image"] for v in out["batches"].values())
        out["gpu_hours_per_100k_negatives"] = round(1e5 * best / 3600, 1)
        return out

    def eval(self) -> dict:
        from tests.benchmarks.eval_gpu import measure

        if self.sdxl is None:
            raise RuntimeError("no SDXL folder (the sdxl_folder section failed)")
        out = self.out / "eval-check" if self.tiny else Path("/tmp/gpu-check-eval")
        shutil.rmtree(out, ignore_errors=True)
        return measure(self.sdxl, out, tiny=self.tiny, steps=2 if self.tiny else self.batches.get("eval_steps", 10))

    def degradation(self) -> dict:
        import numpy as np

        from supir.degradation import apply_batch_torch, preset, rng_for, sample_recipe

        config = preset("realesrgan")
        images = gt_images(64)
        gt = (
            torch.stack([torch.from_numpy(np.asarray(im)).permute(2, 0, 1) for im in images]).float().div(255)
        )
        gt = gt.to(self.device)
        out = {"preset": "realesrgan", "gt_px": list(gt.shape[-2:]), "batches": {}}
        for batch in (16, 64) if not self.tiny else (4,):
            recipes = [sample_recipe(config, rng_for(1, f"gpu-{i}")) for i in range(batch)]
            apply_batch_torch(recipes, gt[:batch])  # warm-up
            self.sync()
            tic = time.perf_counter()
            repeats = 3
            for r in range(repeats):
                recipes = [sample_recipe(config, rng_for(2 + r, f"gpu-{i}")) for i in range(batch)]
                apply_batch_torch(recipes, gt[:batch])
            self.sync()
            out["batches"][str(batch)] = {
                "samples_per_s": round(batch * repeats / (time.perf_counter() - tic), 1)
            }
        return out


def build_random_sdxl(out: Path, device: str) -> None:
    """A random SDXL-base-shaped pipeline in bf16, saved in diffusers format (tokenizers: the tiny BPE)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from supir.model import SDXL_UNET_CONFIG
    from supir.tiny_sdxl import SDXL_SCHEDULER_CONFIG, _tiny_tokenizer

    tok, tok2 = _tiny_tokenizer(), _tiny_tokenizer()
    common = {
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "layer_norm_eps": 1e-5,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG).to(torch.bfloat16)
        vae = AutoencoderKL(**SDXL_VAE_CONFIG).to(torch.bfloat16)
        te = CLIPTextModel._from_config(CLIPTextConfig(**common, **CLIP_L), dtype=torch.bfloat16)
        te2 = CLIPTextModelWithProjection._from_config(
            CLIPTextConfig(**common, **CLIP_BIGG), dtype=torch.bfloat16
        )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "RANDOM_MODEL.json").write_text(
        '{"warning": "random weights, SDXL-base shapes, for speed checks"}\n'
    )
    del pipe, unet, vae, te, te2


def _kept_lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip() and "Loading" not in line]


def gt_images(n: int):
    """n RGB 512² GT crops (PIL) read from the demo train shards (cycled)."""
    from PIL import Image

    found = []
    for tar in sorted(SHARDS.glob("supir-train-*.tar")):
        with tarfile.open(tar) as tf:
            for member in tf.getmembers():
                if member.name.endswith(".gt.png"):
                    found.append(Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB"))
    if not found:
        raise FileNotFoundError(f"no GT crops under {SHARDS}: run scripts/make_train_demo_shards.py {SHARDS}")
    return [found[i % len(found)] for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on CPU (a dry run of this script)")
    parser.add_argument("--only", default="", help="comma-separated sections")
    for name, default in (("train", "1,4,8"), ("caption", "1,8,32"), ("negatives", "1,4")):
        parser.add_argument(f"--{name}-batches", default=default, help=f"batch sizes of the {name} section")
    parser.add_argument("--eval-steps", type=int, default=10, help="sampler steps of the eval section")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA device: use --tiny for a CPU dry run", file=sys.stderr)
        return 2
    batches = {
        name: tuple(int(b) for b in getattr(args, f"{name}_batches").split(","))
        for name in ("train", "caption", "negatives")
    }
    batches["eval_steps"] = args.eval_steps
    check = Check(out, args.tiny, batches)
    order = [
        "env",
        "train_real",
        "sdxl_folder",
        "trainer",
        "caption",
        "negatives",
        "degradation",
        "trainer_resume",
        "trainer_ddp",
        "caption_auto",
        "eval",
    ]
    only = [s for s in args.only.split(",") if s] or order
    for name in order:
        if name in only:
            check.run(name, getattr(check, name))
    failed = [k for k, v in check.results.items() if isinstance(v, dict) and "error" in v]
    print("failed sections:", failed or "none", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`supir-data make-tiny-models DIR`: tiny randomly-initialised LLaVA and SDXL for tests and the demo.

Both are saved with ``save_pretrained`` and load through exactly the ``from_pretrained`` code that
real runs use (``LlavaForConditionalGeneration`` + ``AutoProcessor``; ``StableDiffusionXLImg2ImgPipeline``).
Their tokenizers are built here, offline. Their outputs are nonsense by design: random weights
produce random words and coloured noise. Never present them as results.
"""

import json
from pathlib import Path

import click

# A word-level vocabulary: the caption prompt's words (so the prompt tokenizes without <unk>) plus
# words a caption would use, so the random model's nonsense at least reads as words.
_PROMPT_WORDS = "USER ASSISTANT : Describe this image and its style in a very detailed manner".split()
_CAPTION_WORDS = (
    "a an the of with on at by from under near behind above . , photo picture portrait landscape close "
    "up view shot scene person man woman child people face hair eyes smile hand dog cat bird horse tree "
    "trees forest grass flower flowers field mountain mountains hill river lake sea ocean beach sand sky "
    "clouds sun light shadow night city street road building house window door wall roof car bus bridge "
    "table chair food plate cup red green blue yellow white black brown grey orange pink purple bright "
    "dark soft sharp warm cold natural old young small large tall wooden stone glass metal standing "
    "sitting walking looking wearing holding shirt dress hat background foreground texture colors "
    "detailed realistic vivid calm quiet busy modern vintage"
).split()
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
IMAGE_TOKEN = "<image>"

# Vision tower: 32x32 input, 8x8 patches -> 16 patch tokens (+ CLS, dropped by the "default" strategy).
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
# Wider-than-default init so that greedy outputs depend on the image (a 0.02 init gives every image
# the same caption, which would hide batching bugs in tests).
TINY_INIT_RANGE = 0.2


def _tiny_tokenizer():
    import tokenizers
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(_PROMPT_WORDS) | set(_CAPTION_WORDS))
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words, IMAGE_TOKEN])}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # "USER:" -> "USER", ":"
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        add_bos_token=False,
    )


def build_tiny_llava(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny LLaVA-1.5-shaped model + processor folder to ``out_dir`` and return its path.

    Same architecture family and processor API as ``llava-hf/llava-1.5-13b-hf`` (Llama text model,
    CLIP vision tower, "default" feature selection from layer -2, ``<image>`` expanded by the
    processor), at toy widths. Same seed -> same weights.
    """
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=TINY_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, as llava-1.5's processor
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [*SPECIAL_TOKENS, IMAGE_TOKEN]}
    config = LlavaConfig(
        text_config={
            "model_type": "llama",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 512,
            "initializer_range": TINY_INIT_RANGE,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": TINY_PATCH_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "projection_dim": 32,
        },
        image_token_index=ids[IMAGE_TOKEN],
        image_seq_length=(TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2,
        pad_token_id=ids["<pad>"],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        initializer_range=TINY_INIT_RANGE,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # A random model loops and emits special tokens; the tiny model's own generation config keeps
    # its (nonsense) captions loop-free so the demo has captions to shard. Real models keep theirs.
    gen = model.generation_config
    gen.no_repeat_ngram_size = 2
    gen.suppress_tokens = [ids["<unk>"], ids["<s>"], ids["<pad>"], ids[IMAGE_TOKEN]]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_marker(out, "LLaVA-1.5", seed, "pipelines.devtools.tiny_models.build_tiny_llava")
    return out


def _write_marker(out: Path, family: str, seed: int, built_by: str) -> None:
    marker = {
        "warning": f"tiny randomly initialised {family} for tests and the offline demo; outputs are nonsense",
        "seed": seed,
        "built_by": built_by,
    }
    (out / "TINY_RANDOM_MODEL.json").write_text(json.dumps(marker, indent=2) + "\n")


def build_tiny_models(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """``out_dir/llava`` and ``out_dir/sdxl``; returns ``{"llava": path, "sdxl": path}``."""
    from supir.tiny_sdxl import build_tiny_sdxl

    out = Path(out_dir)
    return {"llava": build_tiny_llava(out / "llava", seed), "sdxl": build_tiny_sdxl(out / "sdxl", seed)}


@click.command("make-tiny-models")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
def make_tiny_models_command(out_dir, seed):
    """Write tiny random LLaVA (OUT_DIR/llava) and SDXL (OUT_DIR/sdxl) models, offline.

    They load like the real ones (`caption --model OUT_DIR/llava`, `negatives --model OUT_DIR/sdxl`)
    and exist to test and demo the pipeline on CPU. Their outputs are nonsense by design.
    """
    paths = build_tiny_models(out_dir, seed)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")

"""Fallback for `make train`: a few WebDataset shards of scikit-image photos, without the data engine.

Used only when the demo pipeline's shards (`make demo`) are not available. Each sample follows
schemas/sample.py: gt.png, lq.png (the Real-ESRGAN degradation of supir.degradation, recipe in the
json, like `supir-data shard --lq precomputed`), txt (hand-written captions) and json.

    .venv/bin/python scripts/make_train_demo_shards.py demo/train-shards
"""

import io
import json
import sys
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from schemas.sample import SAMPLE_SPEC_VERSION
from supir.degradation import apply, preset, rng_for, sample_recipe

PHOTOS = {
    "astronaut.png": "a portrait of an astronaut in a white space suit in front of a flag",
    "chelsea.png": "a close up of a tabby cat with green eyes",
    "coffee.png": "a cup of coffee on a saucer seen from above",
    "rocket.jpg": "a rocket on a launch pad under a blue sky",
    "motorcycle_left.png": "a motorcycle parked in a garage",
}
SIZE = 512


def crops(image: Image.Image, n: int):
    """`n` deterministic SIZE×SIZE crops (with their boxes) of the image resized to short side 640."""
    scale = 640 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    rng = np.random.default_rng(0)
    for _ in range(n):
        left = int(rng.integers(0, image.width - SIZE + 1))
        top = int(rng.integers(0, image.height - SIZE + 1))
        box = [left, top, left + SIZE, top + SIZE]
        # crop_box and original_size are in original pixels (schemas/sample.py)
        yield image.crop(box), [round(v / scale) for v in box]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def main(out: str) -> None:
    import skimage.data

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(skimage.data.__file__).parent
    samples = []
    for name, caption in PHOTOS.items():
        original = Image.open(data_dir / name).convert("RGB")
        for i, (crop, box) in enumerate(crops(original, 8)):
            key = f"{Path(name).stem}_{i}"
            recipe = sample_recipe(preset("supir"), rng_for(0, key))
            lq = Image.fromarray(apply(recipe, np.asarray(crop)))
            meta = {
                "image_id": None,
                "negative_id": None,
                "source": "skimage",
                "is_negative": False,
                "quality": {},
                "caption_model": "hand-written",
                "degradation": recipe.to_dict(),
                "seed": 0,
                "crop_box": box,
                "original_size": list(original.size),
                "spec_version": SAMPLE_SPEC_VERSION,
            }
            samples.append(
                {
                    "__key__": key,
                    "gt.png": png(crop),
                    "lq.png": png(lq),
                    "txt": caption,
                    "json": json.dumps(meta),
                }
            )
    val = [s for i, s in enumerate(samples) if i % 8 == 7]  # one crop of each photo
    train = [s for i, s in enumerate(samples) if i % 8 != 7]
    shards = {
        "supir-train-000000.tar": train[0::2],
        "supir-train-000001.tar": train[1::2],
        "supir-val-000000.tar": val,
    }
    for name, members in shards.items():
        tmp = out_dir / f".{name}.tmp"
        with open(tmp, "wb") as f, wds.TarWriter(f, mtime=0) as writer:  # fixed mtime: reproducible tars
            for sample in members:
                writer.write(sample)
        tmp.rename(out_dir / name)
        print(f"wrote {out_dir / name} ({len(members)} samples)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo/train-shards")

"""eval's prompt is the paper's test prompt: the LLaVA caption of the checkpoint's cleaned LQ + the positive prompt.

A tiny SUPIR checkpoint and a tiny random LLaVA, both loaded through `from_pretrained` as real runs are;
the caption is nonsense, but it must be made from the cleaned LQ, reach the sampler, and be deterministic.
"""

import numpy as np
import pytest
from PIL import Image

from pipelines.devtools.tiny_models import build_tiny_llava
from supir.eval_restore import Method, Restorer
from supir.prompts import POSITIVE_PROMPT
from tests.pipelines.eval_fixtures import make_checkpoints, make_photos


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-caption")
    (checkpoint,) = make_checkpoints(root, names=("ours",))
    photo = make_photos(root / "photos", 1) / "photo_0.png"
    lq = np.asarray(Image.open(photo).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    return checkpoint, build_tiny_llava(root / "llava"), lq


@pytest.mark.timeout(600)
def test_captioned_prompt_reaches_the_sampler_and_is_deterministic(models):
    checkpoint, llava, lq = models
    plain = Restorer(Method("ours", str(checkpoint), "paper", steps=2), size=64)
    captioned = Restorer(Method("ours", str(checkpoint), "paper", steps=2, caption_model=str(llava),
                                caption_max_tokens=4, caption_size=64), size=64)
    without = plain(lq, (64, 64), seed=3)
    assert plain.last_prompt == POSITIVE_PROMPT
    first = captioned(lq, (64, 64), seed=3)
    prompt = captioned.last_prompt
    caption = prompt.removesuffix(POSITIVE_PROMPT).strip()
    assert prompt.endswith(POSITIVE_PROMPT) and caption, prompt
    assert first.shape == without.shape == (64, 64, 3)
    assert not np.array_equal(first, without), "the caption must change the text conditioning"
    again = captioned(lq, (64, 64), seed=3)
    assert captioned.last_prompt == prompt and np.array_equal(first, again)

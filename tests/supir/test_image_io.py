"""The one bytes→RGB rule: every stage sees the pixels ingest judged, and hostile bytes are refused."""

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.devtools.preview import read_rgb
from pipelines.engine.actors import load_rgb
from pipelines.ingest.decode import decode
from pipelines.shard.plan import SamplePlan, ShardConfig
from pipelines.shard.sample import make_gt
from supir.image_io import DEFAULT_MAX_PIXELS, Rejected, open_rgb, pixel_budget
from tests.pipelines.hostile_builders import icns_bomb, ico_bomb, png_bomb


def _rgba_png(width: int = 320, height: int = 200) -> bytes:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[:, : width // 2, 3] = 0  # the left half fully transparent: white after compositing, whatever its RGB
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def _plan(width: int, height: int) -> SamplePlan:
    return SamplePlan(key="k" * 64, image_id="k" * 64, negative_id=None, path="mem", source="s", is_negative=False,
                      caption="c", caption_model=None, quality=None, width=width, height=height, format="PNG",
                      mode="RGBA", bytes=0, crop_seed=0)  # fmt: skip


def test_rgba_shard_gt_is_the_image_ingest_judged(tmp_path):
    data = _rgba_png()
    judged = decode(data, 16, DEFAULT_MAX_PIXELS).rgb  # 320x200: analysed at full scale
    assert judged[:, :160].min() == 255  # transparent pixels composited on white, not their hidden RGB
    member, blob, rgb, _, _ = make_gt(ShardConfig(gt_size=0, lq="none"), _plan(320, 200), data)
    gt = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    assert member == "gt.png" and np.array_equal(gt, judged)
    path = tmp_path / "rgba.png"
    path.write_bytes(data)
    assert np.array_equal(np.asarray(load_rgb(str(path))), judged)  # caption, negatives, IQA
    assert np.array_equal(read_rgb(path), judged)  # degrade-preview
    assert np.array_equal(open_rgb(data, DEFAULT_MAX_PIXELS), judged)


def test_open_rgb_orients_and_reduces_jpeg_in_the_decoder():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (400, 800, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    assert open_rgb(buf.getvalue(), DEFAULT_MAX_PIXELS).shape == (800, 400, 3)
    assert open_rgb(buf.getvalue(), DEFAULT_MAX_PIXELS, reduce_to=100).shape == (200, 100, 3)  # 1/4 by DCT


@pytest.mark.parametrize("blob", [png_bomb(), ico_bomb(), icns_bomb()], ids=["png", "ico", "icns"])
def test_bombs_refused_before_allocation(blob):
    with pytest.raises(Rejected) as info:
        open_rgb(blob, 4_000_000)
    assert info.value.reason == "too_large"


def test_pixel_budget_is_scoped_not_process_wide():
    before = Image.MAX_IMAGE_PIXELS
    with pixel_budget(1000):
        assert Image.MAX_IMAGE_PIXELS == 500  # Pillow raises above twice its limit: exactly the budget
    assert Image.MAX_IMAGE_PIXELS == before and before is not None

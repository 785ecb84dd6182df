"""`supir-data eval` before any Ray work: input names, real-image mode's protocol, refused option mixes."""

import numpy as np
from PIL import Image

from pipelines.eval.inputs import list_images, load_input
from pipelines.eval.stage import EvalJob, prepare_inputs
from supir.eval_protocol import REAL


def test_real_mode_crops_and_resizes_back_to_the_crops_original_size(tmp_path):
    photo = tmp_path / "in" / "sub" / "a.b.png"
    photo.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(photo)
    [image] = list_images(str(tmp_path / "in"), None)
    assert image["image"] == "sub__a.b"  # a path under the input folder, no suffix, safe as a file name
    job = EvalJob(str(tmp_path / "out"), size=120)
    item = prepare_inputs(job, {**image, "degradation": REAL})
    assert item["gt"] is None and item["lq"].shape == (120, 120, 3)  # short side 60 -> 120, centre crop
    assert tuple(item["out_size"]) == (60, 60)  # results go back to the crop's size in the photo
    assert Image.open(tmp_path / "out" / "inputs" / "real" / "sub__a.b.png").size == (120, 120)


def test_option_mixes_that_cannot_work_are_refused_before_any_work(tmp_path, run_cli):
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (32, 32)).save(photos / "x.png")
    cases = [
        (["--baseline", "bicubic"], "exactly one of --gt"),
        (["--gt", photos, "--lq", photos, "--baseline", "bicubic"], "exactly one of --gt"),
        (["--gt", photos], "nothing to evaluate"),
        (["--lq", photos, "--baseline", "bicubic", "--metrics", "psnr,ssim"], "no reference image"),
        (["--gt", photos, "--baseline", "bicubic", "--metrics", "niqe"], "unknown metric niqe"),
        (["--gt", photos, "--baseline", "bicubic", "--degradations", "sr3"], "unknown degradation sr3"),
        (["--gt", photos, "--checkpoint", photos / "x.png"], "supir.convert import"),
        (["--gt", photos, "--checkpoint", photos], "holds no adaptor"),
    ]
    for args, message in cases:
        result = run_cli(tmp_path, "eval", *args, "--out", tmp_path / "out", expect_exit=None)
        assert result.exit_code != 0 and message in str(result.exception), (args, result.exception)
    assert not (tmp_path / "out" / "lake").exists()


def test_shards_give_their_positive_samples_gt(tmp_path):
    import io
    import json
    import tarfile

    def add(tf, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    tar = tmp_path / "shards" / "supir-val-000000.tar"
    tar.parent.mkdir()
    with tarfile.open(tar, "w") as tf:
        for key, negative in (("s0", False), ("s1", True), ("s2", False)):
            buf = io.BytesIO()
            Image.new("RGB", (40, 30), (10 * len(key), 0, 0)).save(buf, format="PNG")
            add(tf, f"{key}.gt.png", buf.getvalue())
            add(tf, f"{key}.json", json.dumps({"is_negative": negative}).encode())
    images = list_images(str(tar.parent), None)
    assert [i["image"] for i in images] == ["supir-val-000000__s0", "supir-val-000000__s2"]  # negatives left out
    assert load_input(images[1]["path"]).size == (40, 30)

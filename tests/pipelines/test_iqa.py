"""pipelines.ingest.iqa: missing weights fail early; real pyiqa models load from weight files and score on Ray.

No weights can be downloaded here, so the scoring tests build pyiqa's own architectures without
pretrained weights, save their random state under the real checkpoint file name, and let pyiqa load
that file through the same `create_metric` path a real run takes.
"""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from catalogs.lake import list_parts
from pipelines.devtools.demo_corpus import encode, load_photo
from pipelines.ingest.iqa import METRICS, check_metrics, load_metric, score_batch, score_images
from schemas.errors import ConfigError, MissingWeightsError


def _save_random_weights(metric: str, weights_dir, wrap: str | None = None, **build):
    """A randomly initialised pyiqa model, saved under the checkpoint name pyiqa looks for."""
    from pipelines.ingest.iqa import create_metric

    torch.manual_seed(0)
    model = create_metric(metric, pretrained=False, device="cpu", **build)
    state = model.net.state_dict()
    torch.save({wrap: state} if wrap else state, weights_dir / METRICS[metric].files[0].name)
    return model


def test_missing_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError) as err:
        check_metrics(["musiq", "clipiqa"], str(tmp_path))
    msg = str(err.value)
    assert f"{tmp_path}/musiq_koniq_ckpt-e95806b9.pth" in msg and f"{tmp_path}/RN50.pt" in msg
    assert "huggingface.co/chaofengc/IQA-PyTorch-Weights" in msg and "--weights-dir" in msg
    # Without --weights-dir: pyiqa's own cache under $TORCH_HOME/hub.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "torch" / "hub" / "pyiqa" / "musiq_koniq")):
        check_metrics(["musiq"], None)
    (tmp_path / "ckpt_koniq10k.pt").write_bytes(b"x")
    with pytest.raises(MissingWeightsError, match="vit_base_patch8_224"):  # maniqa's timm backbone
        check_metrics(["maniqa"], str(tmp_path))
    with pytest.raises(MissingWeightsError, match="not a folder"):
        check_metrics(["musiq"], str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="supported: clipiqa, maniqa, musiq, topiq_nr"):
        check_metrics(["nima"], None)


def test_topiq_checkpoint_loads_through_pyiqa(tmp_path):
    saved = _save_random_weights("topiq_nr", tmp_path, wrap="params", backbone_pretrain=False).net.state_dict()
    model = load_metric("topiq_nr", str(tmp_path))
    loaded = model.net.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    rgb = load_photo("coffee.png")[:224, :224]
    (score,) = score_batch({"topiq_nr": model}, [rgb])["topiq_nr"]
    assert np.isfinite(score) and model.lower_better is False


def test_score_images_on_a_ray_actor_pool(ray_cluster, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    random_musiq = _save_random_weights("musiq", weights)
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i, name in enumerate(["astronaut.png", "coffee.png", "rocket.jpg"]):
        path = images / f"{i}.jpg"
        path.write_bytes(encode(load_photo(name)[:160, :192], "JPEG", quality=90))
        rows.append({"image_id": f"id{i}", "path": str(path)})
    (images / "broken.jpg").write_bytes(b"not an image")
    rows.append({"image_id": "id9", "path": str(images / "broken.jpg")})
    root = tmp_path / "root"

    written = score_images(rows, ["musiq"], str(weights), "run-test", str(root), short_side=128, batch_size=2)

    assert written == 4
    table = pq.read_table(list_parts(root, "iqa_scores")).sort_by("image_id").to_pylist()
    assert [r["image_id"] for r in table] == ["id0", "id1", "id2", "id9"]
    assert {r["metric"] for r in table} == {"musiq"} and {r["lower_better"] for r in table} == {False}
    assert {r["run_id"] for r in table} == {"run-test"}
    assert table[-1]["score"] is None  # unreadable: recorded, not retried forever
    # The actors loaded the saved weights: the saved model in this process gives the same scores.
    from pipelines.engine.actors import load_rgb

    images = [np.asarray(load_rgb(r["path"], min_side=128)) for r in rows[:3]]
    expected = score_batch({"musiq": random_musiq}, images)
    assert [r["score"] for r in table[:3]] == pytest.approx(expected["musiq"], rel=1e-3, abs=1e-3)


def test_pyiqa_leaves_transformers_llama_alone(tmp_path):
    """pyiqa patches transformers' Llama classes on import; LLaVA built afterwards must still work."""
    import transformers.models.llama.modeling_llama as llama

    from pipelines.devtools.tiny_models import build_tiny_llava
    from pipelines.ingest.iqa import import_pyiqa

    layer, forward, causal_forward = llama.LlamaDecoderLayer, llama.LlamaModel.forward, llama.LlamaForCausalLM.forward
    import_pyiqa()
    import pyiqa.archs.q_align.modeling_llama2  # noqa: F401  (the module that patches on first import)

    from supir.validation import _lpips_metric  # training's LPIPS imports pyiqa through the same guard

    _lpips_metric("cpu")
    assert llama.LlamaDecoderLayer is layer
    assert llama.LlamaModel.forward is forward and llama.LlamaForCausalLM.forward is causal_forward
    import torch
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(build_tiny_llava(tmp_path / "llava"))
    ids = torch.tensor([[1, 5, 6, 7]])
    assert model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape[1] == 7  # forward works

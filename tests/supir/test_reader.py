"""The trainer's shard reader on small spec-conforming shards (written here with webdataset's TarWriter)."""

import io
import itertools
import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from webdataset import TarWriter

from schemas.errors import ConfigError
from supir.prompts import POSITIVE_PROMPT
from supir.reader import ReaderConfig, make_loader, resolve_shards

GT = 80  # GT side in the test shards
CROP = 64
PER_SHARD = 6
N_SHARDS = 4
NEGATIVE_PROMPT = "oil painting, cartoon, blur"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_sample(i: int, lq_half: bool = False) -> dict:
    photo = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()][i % 3]
    gt = np.asarray(Image.fromarray(photo).resize((GT, GT + 8 * (i % 2)), Image.Resampling.BILINEAR))
    lq = gt if not lq_half else np.asarray(Image.fromarray(gt).resize((GT // 2, (GT + 8 * (i % 2)) // 2)))
    negative = i % 4 == 3
    meta = {"image_id": f"{i:064x}", "is_negative": negative, "original_size": [400, 300],
            "crop_box": [50, 0, 350, 300], "spec_version": 1}  # fmt: skip
    return {
        "__key__": f"{i:064x}",
        "gt.png": _png(gt),
        "lq.png": _png(lq),
        "txt": (NEGATIVE_PROMPT if negative else f"caption {i}").encode(),
        "json": json.dumps(meta).encode(),
    }


def write_tar(path, samples):
    with TarWriter(str(path), encoder=False, mtime=0) as tar:
        for sample in samples:
            tar.write(sample)
    return str(path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    urls = []
    for s in range(N_SHARDS):
        samples = [make_sample(s * PER_SHARD + j, lq_half=(s == 1)) for j in range(PER_SHARD)]
        urls.append(write_tar(folder / f"t-train-{s:06d}.tar", samples))
    return urls


def _config(urls, **kw) -> ReaderConfig:
    base = dict(shards=urls, batch_size=4, crop_size=CROP, shuffle_buffer=8, caption_dropout=0.0, seed=1)
    return ReaderConfig(**(base | kw))


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["__key__"]]


def test_batches_have_the_trainers_shapes_ranges_and_prompts(shards):
    batches = list(make_loader(_config(shards)))
    assert len(batches) == N_SHARDS * PER_SHARD // 4
    for batch in batches:
        for name in ("gt", "lq"):
            assert batch[name].shape == (4, 3, CROP, CROP) and batch[name].dtype == torch.float32
            assert batch[name].min() >= -1.0 and batch[name].max() <= 1.0
        assert batch["is_negative"].dtype == torch.bool and batch["is_negative"].shape == (4,)
        assert batch["original_size"].tolist() == [[300, 400]] * 4  # (h, w)
        assert batch["crop_top_left"].dtype == torch.long and batch["crop_top_left"].shape == (4, 2)
        for text, negative in zip(batch["txt"], batch["is_negative"].tolist()):
            assert text == NEGATIVE_PROMPT if negative else text.endswith(POSITIVE_PROMPT)
    # shard 0's LQ equals its GT: an aligned crop of both gives equal tensors
    samples = [(k, g, q) for b in batches for k, g, q in zip(b["__key__"], b["gt"], b["lq"])]
    first_shard = [s for s in samples if int(s[0], 16) < PER_SHARD]
    assert first_shard and all(torch.equal(g, q) for _, g, q in first_shard)
    # shard 1's LQ is half size: resized to the GT size, still close to the GT crop (not another crop)
    half = [(g - q).abs().mean().item() for k, g, q in samples if PER_SHARD <= int(k, 16) < 2 * PER_SHARD]
    assert half and max(half) < 0.12


def test_crop_top_left_is_in_the_resized_original(shards):
    batch = next(iter(make_loader(_config(shards[:1], shuffle_buffer=0, batch_size=1))))
    top, left = batch["crop_top_left"][0].tolist()
    # box [50, 0, 350, 300] resized to GT=80 rows: scale 80/300, so left offset round(50*80/300)=13
    assert 0 <= top <= GT - CROP and 13 <= left <= 13 + GT - CROP


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (2, 0), (2, 2)])
def test_ranks_and_workers_cover_each_sample_exactly_once(shards, world_size, num_workers):
    keys = []
    for rank in range(world_size):
        cfg = _config(shards, rank=rank, world_size=world_size, num_workers=num_workers, partial_batches=True)
        keys += _keys(make_loader(cfg))
    expected = [make_sample(i)["__key__"] for i in range(N_SHARDS * PER_SHARD)]
    assert Counter(keys) == Counter(expected)


def test_same_seed_same_batches_and_epochs_differ(shards):
    a, b = make_loader(_config(shards)), make_loader(_config(shards))
    first_a, first_b = next(iter(a)), next(iter(b))
    assert first_a["__key__"] == first_b["__key__"] and torch.equal(first_a["gt"], first_b["gt"])
    second_a = next(iter(a))  # each iter() is the next epoch: another shard order / shuffle / crops
    assert second_a["__key__"] != first_a["__key__"] or not torch.equal(second_a["gt"], first_a["gt"])


def test_caption_dropout_empties_text(shards):
    texts = [t for b in make_loader(_config(shards, caption_dropout=1.0)) for t in b["txt"]]
    assert texts and all(t == "" for t in texts)
    half = [t for b in make_loader(_config(shards, caption_dropout=0.5)) for t in b["txt"]]
    assert 0 < sum(t == "" for t in half) < len(half)


def test_resampled_runs_past_one_epoch(shards):
    loader = make_loader(_config(shards, resampled=True))
    batches = list(itertools.islice(iter(loader), 10))  # one epoch is 6 batches
    assert len(batches) == 10


def test_bad_samples_and_truncated_tars_are_skipped_and_counted(shards, tmp_path, caplog):
    good = [make_sample(100 + i) for i in range(4)]
    no_gt = {k: v for k, v in make_sample(200).items() if k != "gt.png"}
    garbage = make_sample(201) | {"gt.png": b"\x89PNG not really"}
    bad_json = make_sample(202) | {"json": b"{not json"}
    mixed = write_tar(tmp_path / "mixed.tar", [good[0], no_gt, good[1], garbage, bad_json, good[2]])
    full = (tmp_path / "full.tar").read_bytes() if write_tar(tmp_path / "full.tar", good) else b""
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(full[: len(full) // 2 + 100])
    with caplog.at_level(logging.WARNING, logger="supir.reader"):
        loader = make_loader(_config([mixed, str(truncated)], batch_size=1, shuffle_buffer=0))
        keys = _keys(loader)
    assert {make_sample(100 + i)["__key__"] for i in range(3)} <= set(keys)
    assert not {no_gt["__key__"], garbage["__key__"], bad_json["__key__"]} & set(keys)
    assert loader.skipped == 4  # three bad samples + one truncated tar
    assert "skipping bad shard data" in caplog.text


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_skips_are_counted_across_dataloader_workers(tmp_path, start_method):
    # The counter comes from the workers' own context, whatever this process's default start method.
    bad = [make_sample(300 + i) | {"gt.png": b"broken"} for i in range(3)]
    urls = [write_tar(tmp_path / "a.tar", bad[:2]), write_tar(tmp_path / "b.tar", bad[2:] + [make_sample(1)])]
    config = _config(urls, batch_size=1, num_workers=2, shuffle_buffer=0, worker_start_method=start_method)
    loader = make_loader(config)
    assert len(_keys(loader)) == 1
    assert loader.skipped == 3


def test_manifest_and_brace_pattern_resolve(shards, tmp_path):
    folder = tmp_path
    manifest = folder / "t.manifest.json"
    entries = [{"shard": u.rsplit("/", 1)[1], "path": "../" + "/".join(u.rsplit("/", 2)[1:])} for u in shards]
    manifest.write_text(json.dumps({"splits": {"train": {"shards": entries}}}))
    assert [str(p).rsplit("/", 1)[1] for p in resolve_shards(str(manifest))] == [e["shard"] for e in entries]
    pattern = shards[0].replace("000000", "{000000..000003}")
    assert resolve_shards(pattern) == shards
    with pytest.raises(ConfigError, match="no split 'val'"):
        resolve_shards(str(manifest), split="val")
    with pytest.raises(ConfigError, match="does not exist"):
        make_loader(ReaderConfig(shards=str(folder / "nope.manifest.json")))


def test_shards_without_lq_are_degraded_on_the_fly(tmp_path):
    samples = [{k: v for k, v in make_sample(400 + i).items() if k != "lq.png"} for i in range(4)]
    url = write_tar(tmp_path / "nolq.tar", samples)
    first, again = (next(iter(make_loader(_config([url], shuffle_buffer=0)))) for _ in range(2))
    assert first["lq"].shape == first["gt"].shape == (4, 3, CROP, CROP)
    assert -1.0 <= first["lq"].min() and first["lq"].max() <= 1.0
    assert not torch.equal(first["lq"], first["gt"])
    assert torch.equal(first["lq"], again["lq"])  # same seed and epoch: the same degradation

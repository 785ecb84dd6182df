"""The trainer's shard reader: WebDataset tars → batches of aligned (GT, LQ, prompt) crops.

    loader = make_loader(ReaderConfig(shards="data/shards/supir.manifest.json", batch_size=4))
    for batch in loader:   # one epoch; `resampled=True` makes it infinite
        batch["gt"], batch["lq"]          # float B×3×S×S in [-1, 1]
        batch["txt"], batch["is_negative"], batch["original_size"], batch["crop_top_left"], batch["__key__"]

Shards are split across ranks (torch.distributed) and DataLoader workers by shard index, so an
epoch visits every sample exactly once. A bad sample or a broken tar is skipped with a warning and
counted (``loader.skipped``) instead of killing training. Built on webdataset's tar iteration,
shuffle buffer and batching; per-sample work lives in :mod:`supir.reader_transforms`.
"""

import json
import logging
import multiprocessing
import random
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset
from webdataset.gopen import gopen, gopen_schemes
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_iterator

from schemas.errors import ConfigError, SupirDataError
from schemas.runs import derive_seed
from schemas.sample import MANIFEST_SUFFIX
from supir.reader_transforms import SampleTransform, collate

log = logging.getLogger("supir.reader")




@dataclass
class ReaderConfig:
    """What the trainer reads and how. ``shards``: a ``*.manifest.json``, a brace pattern or a list of tars."""

    shards: str | list[str]
    split: str = "train"  # which split of a manifest
    batch_size: int = 8
    crop_size: int = 512  # the paper's training crop
    shuffle_buffer: int = 1000  # samples; 0 disables sample shuffling (shard order still shuffles)
    resampled: bool = False  # sample shards with replacement forever (equal-length ranks for DDP)
    caption_dropout: float = 0.05  # P(txt = "") for classifier-free guidance; not stated in the paper
    seed: int = 0
    num_workers: int = 0
    partial_batches: bool = False  # keep the last short batch of each worker
    degradation_preset: str = "supir"  # used only for shards written with `--lq none`
    rank: int | None = None  # None: torch.distributed's rank when initialised, else 0
    world_size: int | None = None
    extra_loader_args: dict = field(default_factory=dict)  # e.g. pin_memory, prefetch_factor
    # Workers are spawned, not forked: a worker forked after multi-threaded torch/OpenMP work can
    # deadlock (seen here: one forked after training steps never produced a batch).
    worker_start_method: str = "spawn"


def resolve_shards(shards: str | list[str], split: str = "train") -> list[str]:
    """Tar paths from a manifest (resolved next to it), a brace pattern, or a list.

    Any of them may be an object-store URL (``s3://bucket/prefix/shards/supir.manifest.json``): tars
    are then streamed from the store (see :func:`open_shard`), not downloaded first.
    """
    if isinstance(shards, (list, tuple)):
        urls = [str(s) for s in shards]
    elif str(shards).endswith(MANIFEST_SUFFIX):
        text = str(shards)
        try:
            with open_shard(text) as fh:
                manifest = json.loads(fh.read())
        except FileNotFoundError:
            raise ConfigError(f"shard manifest {text} does not exist; run `supir-data shard` first") from None
        except ValueError as exc:
            raise ConfigError(f"shard manifest {text} is not valid JSON: {exc}") from None
        splits = manifest.get("splits", {})
        if split not in splits:
            raise ConfigError(f"manifest {text} has no split {split!r}; it has {sorted(splits)}")
        folder = text.rsplit("/", 1)[0] if _is_store_url(text) else str(Path(text).parent)
        urls = [f"{folder}/{entry['path']}" for entry in splits[split]["shards"]]
    else:
        urls = expand_urls(str(shards))
    if not urls:
        raise ConfigError(f"no shards in {shards!r} (split {split!r}): nothing to read")
    return urls


def _is_store_url(url: str) -> bool:
    """An fsspec URL that webdataset's own opener lacks (s3://, gcs://, az://, memory://...)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return bool(scheme) and scheme not in gopen_schemes and scheme != "file"


def open_shard(url: str):
    """A readable binary stream of one tar or manifest: webdataset's opener (local, http, pipe:...)
    or, for object-store URLs, fsspec with the standard environment (``AWS_*``, ``AWS_ENDPOINT_URL``)."""
    if _is_store_url(url):
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        return fs.open(path, "rb", block_size=8 << 20)  # sequential reads: large blocks
    return gopen(url, "rb")


def _open_shards(sources, handler):
    """webdataset's ``url_opener`` with :func:`open_shard`: a shard that cannot be opened is handled."""
    for source in sources:
        try:
            yield {**source, "stream": open_shard(source["url"])}
        except Exception as exn:  # noqa: BLE001 - the handler decides (counts it, or re-raises)
            exn.args = (*exn.args, source["url"])
            if not handler(exn):
                break


def _distributed_rank_world(config: ReaderConfig) -> tuple[int, int]:
    if config.rank is not None and config.world_size is not None:
        return config.rank, config.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _SkipAndCount:
    """webdataset handler: warn, count, continue. Project errors (bad config) still stop training."""

    def __init__(self, counter):
        self.counter = counter

    def __call__(self, exn: Exception) -> bool:
        if isinstance(exn, SupirDataError):
            raise exn
        with self.counter.get_lock():
            self.counter.value += 1
        log.warning("skipping bad shard data: %s", exn)
        return True


class ShardDataset(IterableDataset):
    """Yields collated batches; each DataLoader worker reads its own shards."""

    def __init__(self, config: ReaderConfig, urls: list[str], rank: int, world_size: int, mp_context=None):
        self.config = config
        self.urls = urls
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.transform = SampleTransform(
            crop_size=config.crop_size,
            caption_dropout=config.caption_dropout,
            seed=config.seed,
            degradation_preset=config.degradation_preset,
        )
        # Shared with DataLoader workers, so the main process sees their counts. It must come from the
        # workers' own multiprocessing context (a fork-context lock cannot be sent to spawned workers).
        self.skipped = (mp_context or multiprocessing.get_context()).Value("q", 0)

    def _worker(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def shard_urls(self):
        """This (rank, worker)'s shards for the current epoch, as webdataset source dicts."""
        worker, num_workers = self._worker()
        slot, slots = self.rank * num_workers + worker, self.world_size * num_workers
        if self.config.resampled:
            rng = random.Random(derive_seed(self.config.seed, f"resample:{self.epoch}:{slot}"))
            while True:
                yield {"url": rng.choice(self.urls)}
        # Every slot shuffles the same way (same seed), then takes every `slots`-th shard: a partition.
        order = list(self.urls)
        random.Random(derive_seed(self.config.seed, f"shards:{self.epoch}")).shuffle(order)
        for url in order[slot::slots]:
            yield {"url": url}

    def _tar_members(self, handler):
        """(name, bytes) members of this worker's tars; a broken tar counts once and ends at the break."""

        def stop_this_tar(exn: Exception) -> bool:
            handler(exn)
            return False  # a tar stream cannot resync after a bad header or truncated data

        for source in _open_shards(self.shard_urls(), handler):
            try:
                for member in tar_file_iterator(source["stream"], handler=stop_this_tar):
                    member["__url__"] = source["url"]
                    yield member
            except Exception as exn:  # noqa: BLE001 - raised between members: same verdict
                exn.args = (*exn.args, source["url"])
                handler(exn)
            finally:
                source["stream"].close()
            yield {}  # end-of-shard marker: group_by_keys never merges samples across tars

    def samples(self):
        """Training samples (uint8 crops + conditioning) of this worker, bad ones skipped and counted."""
        handler = _SkipAndCount(self.skipped)
        raw = group_by_keys(self._tar_members(handler), handler=handler)
        if self.config.shuffle_buffer > 0:
            worker, _ = self._worker()
            rng = random.Random(derive_seed(self.config.seed, f"shuffle:{self.epoch}:{self.rank}:{worker}"))
            raw = wds.shuffle(self.config.shuffle_buffer, initial=min(100, self.config.shuffle_buffer), rng=rng)(raw)
        for sample in raw:
            try:
                yield self.transform(sample, epoch=self.epoch)
            except Exception as exn:  # noqa: BLE001 - the handler decides (re-raises project errors)
                exn.args = (*exn.args, sample.get("__url__"))
                handler(exn)

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            cv2.setNumThreads(1)  # parallelism comes from the workers; avoid oversubscription
        batches = wds.batched(self.config.batch_size, collation_fn=collate, partial=self.config.partial_batches)
        return iter(batches(self.samples()))


class ShardLoader:
    """Iterate for one epoch of batches (each ``iter()`` starts the next epoch); ``skipped`` counts bad data."""

    def __init__(self, config: ReaderConfig):
        self.config = config
        self.urls = resolve_shards(config.shards, config.split)
        rank, world_size = _distributed_rank_world(config)
        slots = world_size * max(1, config.num_workers)
        if not config.resampled and len(self.urls) < slots:
            log.warning(
                "%d shards for %d rank×worker slots: some slots get no data; write more shards (--max-count) "
                "or use resampled=True",
                len(self.urls),
                slots,
            )
        loader_args = dict(config.extra_loader_args)
        context = loader_args.pop("multiprocessing_context", None) or config.worker_start_method
        if isinstance(context, str):
            try:
                context = multiprocessing.get_context(context)
            except ValueError as exc:
                raise ConfigError(f"worker_start_method: {exc}") from None
        if config.num_workers > 0:
            loader_args["multiprocessing_context"] = context
        else:  # no workers: a spawn-context counter would start a resource-tracker process for nothing
            context = multiprocessing.get_context()
        self.dataset = ShardDataset(config, self.urls, rank, world_size, context)
        self.dataloader = DataLoader(
            self.dataset, batch_size=None, num_workers=config.num_workers, **loader_args
        )
        self.epoch = 0

    @property
    def skipped(self) -> int:
        return int(self.dataset.skipped.value)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.dataset.epoch = self.epoch  # workers start at iter() and copy the dataset as it is now
        self.epoch += 1
        return iter(self.dataloader)


def make_loader(config: ReaderConfig) -> ShardLoader:
    """The trainer's entry point: an iterable of batch dicts (see the module docstring)."""
    if config.crop_size <= 0 or config.batch_size <= 0:
        raise ConfigError(f"crop_size and batch_size must be positive, got {config.crop_size}, {config.batch_size}")
    if not 0.0 <= config.caption_dropout <= 1.0:
        raise ConfigError(f"caption_dropout must be in [0, 1], got {config.caption_dropout}")
    return ShardLoader(config)

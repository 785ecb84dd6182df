"""Sizing the actor pool of model stages (caption, negatives, iqa) and their shared options.

The one batching policy: a job (one actor call, one Parquet part) holds ``part_rows`` items and the
model sees ``batch_size`` of them at a time; a GPU out-of-memory error halves ``batch_size`` for the
rest of the actor's life (pipelines/engine/isolation.py). A part is the unit of work a crash loses;
big parts keep a 20M-row table to thousands of files, not millions. The engine
(pipelines/engine/executor.py) runs the pool.
"""

import hashlib
import math
from dataclasses import dataclass

import click
from PIL import Image

from pipelines.engine.sources import read_bytes
from schemas.errors import ConfigError, InputImageError
from supir.image_io import DEFAULT_MAX_PIXELS, Rejected, open_rgb

# Parts queued per actor: the prefetch that hides decoding behind the model.
TASKS_IN_FLIGHT_PER_ACTOR = 2


@dataclass(frozen=True)
class ActorPool:
    """How many model actors, and what each one holds."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    prepare_cpus: float  # CPUs of each decode task
    torch_threads: int  # intra-op threads of a CPU actor
    batch_size: int  # rows per model call
    part_rows: int  # rows per actor call = per Parquet part


@dataclass(frozen=True)
class PoolOptions:
    """What the user asked for (the shared CLI options); :func:`plan_actor_pool` fills the rest."""

    batch_size: int  # rows per model call
    part_rows: int  # rows per actor call and per Parquet part
    actors: int | None = None  # default: one per GPU, else as many CPU actors as fit
    gpus_per_actor: float | None = None  # default: 1 when the cluster has GPUs, else 0


def pool_options(batch_size: int, part_rows: int, batch_help: str = "Rows per model call."):
    """The click options every model stage shares (--batch-size, --part-rows, --actors, --gpus-per-actor)."""

    def decorate(command):
        for option in reversed(
            [
                click.option(
                    "--batch-size",
                    type=int,
                    default=batch_size,
                    show_default=True,
                    help=batch_help,
                ),
                click.option(
                    "--part-rows",
                    type=int,
                    default=part_rows,
                    show_default=True,
                    help="Rows per actor task and Parquet part (the work a crash can lose).",
                ),
                click.option(
                    "--actors", type=int, default=None, help="Model replicas (default: one per GPU, else 1)."
                ),
                click.option(
                    "--gpus-per-actor",
                    type=float,
                    default=None,
                    help="Default 1 when the Ray cluster has GPUs, else 0 (CPU).",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def plan_actor_pool(opts: PoolOptions, cpu_threads: int | None = None, auto_batch: bool = False) -> ActorPool:
    """Size the pool from the cluster: one actor per GPU (or per ``gpus_per_actor``), else CPU actors.

    Actors never hold every CPU: on a small machine decode tasks would starve and the dataset hang.
    ``cpu_threads`` pins the intra-op threads of CPU actors (CPU float results depend on the thread
    count), and CPU actors are then as many as fit; without it one CPU actor uses the cluster.
    ``auto_batch``: the stage accepts ``--batch-size 0`` and sizes batches in its actors.
    """
    from pipelines.engine.runtime import cluster_cpus, cluster_gpus

    actors, gpus_per_actor = opts.actors, opts.gpus_per_actor
    if opts.batch_size < (0 if auto_batch else 1) or opts.part_rows < 1:
        least = "0 (automatic)" if auto_batch else "1"
        raise ConfigError(
            f"--batch-size must be >= {least} and --part-rows >= 1, got {opts.batch_size} and {opts.part_rows}"
        )
    if actors is not None and actors < 1:
        raise ConfigError(f"--actors must be >= 1, got {actors}")
    cpus, gpus = cluster_cpus(), cluster_gpus()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus else 0.0
    if gpus_per_actor < 0:
        raise ConfigError(f"--gpus-per-actor must be >= 0, got {gpus_per_actor}")
    prepare_cpus = min(0.5, cpus / 4)
    if gpus_per_actor > 0:
        fit = int(gpus // gpus_per_actor) if gpus else 0
        if fit < 1:
            raise ConfigError(
                f"--gpus-per-actor {gpus_per_actor} but the Ray cluster has {gpus} GPU(s); "
                "use --gpus-per-actor 0 to run on CPU"
            )
        actors = actors or fit
        if actors > fit:
            # Ray would leave the extra actors pending forever.
            raise ConfigError(
                f"--actors {actors} x --gpus-per-actor {gpus_per_actor} needs more than {gpus} GPU(s)"
            )
        cpus_per_actor = min(1.0, (cpus - prepare_cpus) / actors)
        threads = 1
    else:
        if cpu_threads:
            actors = actors or max(1, math.floor((cpus - prepare_cpus) / cpu_threads))
        actors = actors or 1
        cpus_per_actor = (cpus - prepare_cpus) / actors
        # Never more threads than CPUs held: OpenMP threads spin, and oversubscribed they crawl.
        threads = cpu_threads or max(1, math.floor(cpus_per_actor))
    return ActorPool(
        actors=actors,
        gpus_per_actor=float(gpus_per_actor),
        cpus_per_actor=max(0.1, cpus_per_actor),
        prepare_cpus=prepare_cpus,
        torch_threads=threads,
        batch_size=opts.batch_size,
        part_rows=max(opts.part_rows, opts.batch_size),
    )


def chunks(n: int, size: int) -> list[range]:
    """Index ranges of ``size`` (the last one shorter) covering ``range(n)``."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def part_name(prefix: str, keys) -> str:
    """A deterministic part name for a unit of work: a retried batch replaces its part."""
    digest = hashlib.sha256("\n".join(sorted(map(str, keys))).encode()).hexdigest()[:20]
    return f"{prefix}-{digest}"


def load_rgb(path: str, min_side: int | None = None) -> Image.Image:
    """EXIF-oriented RGB image by the one rule (`supir.image_io.open_rgb`); with ``min_side``, reduced
    so its short side is ``min_side``.

    JPEGs are reduced inside the decoder (DCT scaling via ``draft``: a 12 MP photo decoded at 1/8
    costs a fraction of a full decode), then finished with a bicubic resize. Never upscales.
    """
    try:
        img = Image.fromarray(open_rgb(read_bytes(path), DEFAULT_MAX_PIXELS, reduce_to=min_side))
    except (OSError, Rejected) as exc:
        raise InputImageError(f"cannot read {path}: {exc}") from exc
    if min_side and min(img.size) > min_side:
        w, h = img.size
        ratio = min_side / min(w, h)
        size = (max(min_side, round(w * ratio)), max(min_side, round(h * ratio)))
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return img

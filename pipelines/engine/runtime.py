"""The Ray runtime shared by every stage: start or join a cluster, size batches, show progress."""

import ctypes
import ctypes.util
import logging
import os
import sys
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_malloc_tuned: bool | None = None  # None: not tried yet in this process


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Keep image-sized buffers on the heap in this (worker) process; glibc only, else a no-op.

    Measured in Ray Data's map workers: glibc kept returning each multi-megabyte decode/analysis
    buffer to the OS, so every image re-faulted ~1,200 fresh pages (~4.7 MB): 570 K page faults and
    +25 % CPU for 500 JPEGs. With these thresholds the same run has ~20 faults and is 1.3x faster.
    32 MiB is the largest mmap threshold every glibc accepts (older ones refuse more); the heap then
    keeps freed buffers for reuse, so a worker's memory is bounded by its peak use. The setting holds
    for the rest of the worker process's life.
    """
    global _malloc_tuned
    if _malloc_tuned is not None:  # once per process: every scan task calls this, success or not
        return _malloc_tuned
    if not (0 < mmap_threshold < 2**31 and 0 < trim_threshold < 2**31):
        raise ValueError("malloc thresholds must be positive and below 2 GiB (C int)")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        _malloc_tuned = bool(mmap_ok and trim_ok)
    except (OSError, AttributeError):  # not glibc (macOS): nothing to tune
        _malloc_tuned = False
    return _malloc_tuned


def limit_native_threads(threads: int = 1) -> None:
    """Let OpenCV's own thread pool use at most ``threads`` threads in this (CPU worker) process.

    The parallelism of a CPU stage is Ray's: one task per CPU it asked for. OpenCV ignores
    ``OMP_NUM_THREADS`` that Ray sets (its pthreads pool is as wide as the machine), so two workers on
    two cores ran four decoding/filtering threads that fight over the cores. Only when OpenCV is
    already imported (a stage that never uses it does not pay its import).
    """
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and cv2.getNumThreads() != threads:
        cv2.setNumThreads(threads)


# How long an idle worker process lives in a Ray we start (Ray's default: 1 s beyond its soft limit
# of one worker per CPU, which a model actor counts towards). Measured on 2 CPUs: the decoding worker
# of the caption stage sat idle while the model loaded, was killed, and the next part waited 2.2 s for
# a fresh worker to import the stage again (steady-state overhead +50 % over the direct loop; +6 %
# with the worker kept). A cluster started by `ray start` keeps its own setting.
IDLE_WORKER_SECONDS = 60


@dataclass(frozen=True)
class Settings:
    """The global CLI options, handed to every command."""

    root: str
    ray_address: str | None = None
    num_cpus: int | None = None
    debug: bool = False


def init_ray(settings: Settings) -> None:
    """Join ``--ray-address``/``RAY_ADDRESS``, else start a private local Ray (``num_cpus``: machine).

    Without an address Ray would connect to whatever cluster its ``ray_current_cluster`` file names
    (written by ``ray start``, left behind when that cluster dies) and then refuse ``num_cpus``;
    ``address="local"`` always starts a fresh instance of our own. With an address the cluster's own
    resources count, so no ``num_cpus`` is passed. Reuses an instance already up (tests share one).
    """
    import ray

    if ray.is_initialized():
        return
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(
        include_dashboard=False,
        log_to_driver=settings.debug,
        logging_level=logging.INFO if settings.debug else logging.ERROR,
        configure_logging=True,
    )
    env_vars = storage_env()
    if env_vars:  # a worker on another node has none of the driver's environment
        kwargs["runtime_env"] = {"env_vars": env_vars}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=settings.num_cpus or os.cpu_count(),
                 _system_config={"idle_worker_killing_time_threshold_ms": IDLE_WORKER_SECONDS * 1000}, **kwargs)
    if not settings.debug:
        logging.getLogger("ray").setLevel(logging.ERROR)


# The standard environment of the object stores fsspec reads (s3fs/botocore, gcsfs, adlfs).
STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "AZURE_STORAGE_", "FSSPEC_")


def storage_env() -> dict[str, str]:
    """The driver's object-store credentials and endpoints, for every Ray worker of this job.

    Workers write lake parts and shards to the data root and read images from their URLs; on a
    cluster they run in processes started by other nodes' raylets, which do not inherit the
    driver's environment. Ray keeps a job's ``runtime_env`` in its control store (readable by
    anyone who can reach the cluster's GCS): prefer node roles/instance profiles there.
    """
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(STORAGE_ENV_PREFIXES)}


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def progress(description: str, **fields) -> Progress:
    """A rich progress bar; extra ``fields`` are shown as ``name=value`` and updated with ``update()``."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    for name in fields:
        columns.append(TextColumn(f"{name}={{task.fields[{name}]}}"))
    columns.append(TimeElapsedColumn())
    return Progress(*columns, transient=False)

"""The Ray runtime shared by every stage: start or join a cluster, size batches, show progress."""

import logging
import os
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass(frozen=True)
class Settings:
    """The global CLI options, handed to every command."""

    root: str
    ray_address: str | None = None
    num_cpus: int | None = None
    debug: bool = False


def init_ray(settings: Settings) -> None:
    """Start a local Ray (``num_cpus`` = machine unless given) or join ``--ray-address``.

    Reuses an instance that is already up (tests share one per session).
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
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=settings.num_cpus or os.cpu_count(), **kwargs)
    if not settings.debug:  # Ray Data logs every execution at INFO; our progress bar says enough
        for name in ("ray", "ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # we draw our own
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")  # claim Ray Data's one-time "bars disabled" warning
    ctx.verbose_stats_logs = False
    ctx.print_on_execution_start = False


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

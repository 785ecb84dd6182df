"""Click options every stage shares, with their defaults read from the engine's dataclasses."""

import click

from pipelines.engine.stage import Limits


def limit_options(defaults: Limits = Limits()):  # noqa: B008 - a frozen dataclass: one shared default
    """``--item-seconds`` and ``--worker-memory`` (see :class:`Limits`)."""

    def decorate(command):
        command = click.option(
            "--worker-memory", type=float, default=defaults.worker_memory, show_default=True,
            help="Share of the machine's memory the CPU workers of this stage may allocate in all.",
        )(command)  # fmt: skip
        return click.option(
            "--item-seconds", type=float, default=defaults.item_seconds, show_default=True,
            help="Time limit per item; an item past it is recorded as `timeout` and the run goes on.",
        )(command)  # fmt: skip

    return decorate


def make_limits(item_seconds: float, worker_memory: float) -> Limits:
    from schemas.errors import ConfigError

    try:
        return Limits(item_seconds=item_seconds, worker_memory=worker_memory)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

"""The `supir-data` command line.

Commands are imported lazily (``COMMANDS`` maps a name to ``module:attribute``), so `query` and
`status` start in a fraction of a second without importing torch or Ray.
"""

import importlib
import importlib.util
import os
import sys

import click
from rich.console import Console

from pipelines.engine.runtime import Settings
from schemas.errors import SupirDataError

COMMANDS = {
    "ingest": "pipelines.ingest.command:ingest_command",
    "status": "pipelines.status.command:status_command",
    "compact": "pipelines.compact.command:compact_command",
    "query": "pipelines.status.command:query_command",
    "caption": "pipelines.caption.command:caption_command",
    "negatives": "pipelines.negatives.command:negatives_command",
    "make-tiny-models": "pipelines.devtools.tiny_models:make_tiny_models_command",
    "shard": "pipelines.shard.command:shard_command",
    "verify": "pipelines.shard.verify:verify_command",
    "degrade-preview": "pipelines.devtools.preview:degrade_preview_command",
    "make-demo-corpus": "pipelines.devtools.demo_corpus:make_demo_corpus_command",
    "report": "pipelines.report.command:report_command",
    "explain": "pipelines.report.explain:explain_command",
    "eval": "pipelines.eval.command:eval_command",
}

err_console = Console(stderr=True)


class LazyGroup(click.Group):
    def _available(self) -> dict[str, str]:
        out = {}
        for name, target in COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                out[name] = target
        return out

    def list_commands(self, ctx):
        return sorted(self._available())

    def get_command(self, ctx, name):
        target = self._available().get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    default=lambda: os.environ.get("SUPIR_DATA_ROOT", "./data"),
    show_default="$SUPIR_DATA_ROOT or ./data",
    help="Data root: holds catalog.duckdb, lake/, negatives/, shards/.",
)
@click.option("--ray-address", default=None, help="Join an existing Ray cluster (else RAY_ADDRESS, else start one).")
@click.option("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all).")
@click.option("--debug", is_flag=True, help="Show tracebacks and Ray logs.")
@click.pass_context
def cli(ctx, root, ray_address, num_cpus, debug):
    """supir-data: the data engine and trainer for SUPIR-style image restoration."""
    ctx.obj = Settings(root=root, ray_address=ray_address, num_cpus=num_cpus, debug=debug)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="supir-data", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SupirDataError as exc:
        if "--debug" in args:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Shared fixtures: one Ray instance per test session, the CLI runner, offline model hubs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs) shared by every test that needs it; the CLI reuses it."""
    import ray

    from pipelines.engine.runtime import Settings, init_ray

    init_ray(Settings(root=".", num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture
def run_cli():
    """Run the real `supir-data` CLI in-process: ``run_cli(root, "ingest", path, ...)`` -> Result.

    Fails the test on a non-zero exit unless ``expect_exit`` says otherwise (None: any exit code).
    """
    from pipelines.cli import cli

    def _run(root, *args, expect_exit=0):
        result = CliRunner().invoke(cli, ["--root", str(root), *map(str, args)], catch_exceptions=True)
        if expect_exit is not None and result.exit_code != expect_exit:
            detail = result.output
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                import traceback

                detail += "".join(traceback.format_exception(result.exception))
            raise AssertionError(f"supir-data {' '.join(map(str, args))} exited {result.exit_code}:\n{detail}")
        return result

    return _run


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random LLaVA and SDXL (``{"llava": path, "sdxl": path}``), built once per session."""
    from pipelines.devtools.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def torch_hub(tmp_path):
    """An empty, private torch hub folder (pyiqa's LPIPS and NR weights are looked up there)."""
    import torch

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)

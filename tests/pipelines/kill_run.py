"""Kill a real `python -m pipelines ...` run mid-way, on a real signal (its results on disk), never a sleep."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_and_kill(args: list[str], count_parts: Callable[[], int], at_least: int = 1, timeout: float = 150) -> int:
    """Start `python -m pipelines ARGS`; once ``count_parts()`` reaches ``at_least``, SIGKILL the driver and
    every process it started (GCS, raylet, workers, actors): a crash of the whole run. Returns
    ``count_parts()`` after the kill; fails if the run ended on its own before it could be killed."""
    import psutil

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *map(str, args)], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list = []
    running = False
    try:
        deadline = time.monotonic() + timeout
        while count_parts() < at_least and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        running = proc.poll() is None
        try:
            started = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:  # ended meanwhile: the assertion below reports it
            started = []
    finally:
        proc.kill()  # the driver first, then its Ray
        for child in {p.pid: p for p in started}.values():
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait()
        psutil.wait_procs(started, timeout=30)
    assert running, f"the run ended (exit {proc.returncode}) before it could be killed mid-way"
    return count_parts()

"""The engine under the real CLI: a private Ray beside someone else's cluster, inputs that break
the per-file code or the table, and the run stats `status` shows."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from catalogs.catalog import Catalog

RAY = str(Path(sys.executable).with_name("ray"))


def photos(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"photo_{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def bmp_with_width(path: Path, width: int) -> Path:
    """A valid BMP whose header then claims ``width`` (as an unsigned 32-bit field)."""
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path, format="BMP")
    data = bytearray(path.read_bytes())
    data[18:22] = width.to_bytes(4, "little")  # BITMAPINFOHEADER.biWidth
    path.write_bytes(bytes(data))
    return path


def test_every_path_gets_one_row_even_when_it_breaks_the_table(tmp_path, ray_cluster, run_cli):
    good = photos(tmp_path / "in")
    bad = bmp_with_width(tmp_path / "in" / "negative_width.bmp", 4294967169)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    run_cli(tmp_path / "root", "ingest", tmp_path / "in", "--min-side", 16)
    rows = Catalog(tmp_path / "root").query("SELECT path, reason, width FROM images").to_pylist()
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == len(good) + 2
    assert by_path[str(bad)]["reason"] in ("corrupt", "too_large", "unsupported")
    assert by_path[str(bad)]["width"] is None or 0 <= by_path[str(bad)]["width"] < 2**31


def test_status_shows_the_last_run_of_each_stage(tmp_path, ray_cluster, run_cli):
    photos(tmp_path / "in")
    root = tmp_path / "root"
    run_cli(root, "ingest", tmp_path / "in", "--min-side", 16)
    out = run_cli(root, "status").output
    assert "last run of each stage" in out and "ingest" in out
    runs = Catalog(root).query("SELECT stage, items, rows FROM stage_runs").to_pylist()
    assert runs == [{"stage": "ingest", "items": 3, "rows": 3}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_commands_start_a_private_ray_beside_a_cluster_started_with_ray_start(tmp_path):
    """`ray start --head` on the machine (its cluster file where Ray looks): no --ray-address still works."""
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=temp, PYTHONPATH=os.getcwd(), RAY_USAGE_STATS_ENABLED="0")
    start = [RAY, "start", "--head", f"--temp-dir={temp}", f"--port={_free_port()}", "--num-cpus=1",
             "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert list(Path(temp).glob("**/ray_current_cluster")), "ray start wrote no cluster file"
        photos(tmp_path / "in")
        cmd = [sys.executable, "-m", "pipelines", "--root", str(tmp_path / "root"), "--num-cpus", "1",
               "ingest", str(tmp_path / "in"), "--min-side", "16"]  # fmt: skip
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert Catalog(tmp_path / "root").scalar("SELECT count(*) FROM images") == 3
    finally:  # stop exactly the processes of this cluster (their command lines name its temp dir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _processes_mentioning(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        shutil.rmtree(temp, ignore_errors=True)

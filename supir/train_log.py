"""Training logs: a CSV file (one row per step, append-only across resumes) and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLog:
    """Rank 0 writes ``OUTPUT/log.csv`` (step, name, value) and ``OUTPUT/tensorboard/``; others no-op."""

    def __init__(self, output_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "log.csv"
        new = not path.exists()
        self._file = path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is a declared dependency; keep the CSV log regardless
            self._tb = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._csv.writerow([step, name, f"{float(value):.6g}"])
            if self._tb is not None:
                self._tb.add_scalar(name, float(value), step)
        self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()

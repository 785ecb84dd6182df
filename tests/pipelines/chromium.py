"""Headless Chromium for the report tests: a screenshot and the page's console messages.

`--enable-logging=stderr --v=0` prints every console message (log, warning, error and uncaught
exceptions alike) as a ``:CONSOLE`` line; the report runs no scripts, so any such line is a fault.
"""

import re
import shutil
import subprocess
from pathlib import Path

_CONSOLE = re.compile(r":CONSOLE[:(]\S*\]?\s*(.*)")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(url: str, png: Path, profile: Path, width: int = 1400, height: int = 3000) -> list[str]:
    """Render ``url`` into ``png``; returns the console messages of the page."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
           f"--window-size={width},{height}", f"--screenshot={png}", "--enable-logging=stderr", "--v=0", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert png.exists(), f"chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return [m.group(1) for m in map(_CONSOLE.search, proc.stderr.splitlines()) if m]

"""Expand ingest PATH arguments into a flat, de-duplicated list of (path, source) pairs.

A PATH is a file, a folder (recursive), a glob, a `.txt`/`.csv`/`.parquet` list of paths, or an
fsspec URL (``s3://bucket/prefix``) where the matching filesystem package is installed. Local paths
become absolute so that a path's identity does not depend on the working directory.
"""

import csv
import glob
import os
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import SupirDataError

LIST_SUFFIXES = (".txt", ".csv", ".parquet")
_GLOB_CHARS = set("*?[")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _walk_local(folder: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def _expand_url(url: str) -> Iterator[str]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SupirDataError(f"cannot open {url!r}: {exc} (install the fsspec package for that scheme)") from exc
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    if any(c in root for c in _GLOB_CHARS):
        found = fs.glob(root)
    elif fs.isdir(root):
        found = fs.find(root)
    elif fs.exists(root):
        found = [root]
    else:
        raise SupirDataError(f"no such file or folder: {url}")
    for p in sorted(found):
        if not Path(p).name.startswith("."):
            yield f"{protocol}://{p}"


def _read_list(list_file: str) -> Iterator[str]:
    suffix = Path(list_file).suffix.lower()
    base = os.path.dirname(os.path.abspath(list_file))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(list_file)
        column = "path" if "path" in table.column_names else table.column_names[0]
        entries = [p for p in table.column(column).to_pylist() if p]
    elif suffix == ".csv":
        with open(list_file, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        header = [h.strip().lower() for h in rows[0]]
        col = header.index("path") if "path" in header else 0
        body = rows[1:] if "path" in header else rows
        entries = [r[col].strip() for r in body if len(r) > col and r[col].strip()]
    else:
        with open(list_file) as fh:
            entries = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    for entry in entries:
        yield entry if is_url(entry) or os.path.isabs(entry) else os.path.join(base, entry)


def expand_paths(args: list[str], source: str | None = None) -> list[tuple[str, str]]:
    """All input files as sorted unique (path, source). Missing PATH arguments raise at once.

    Paths listed inside a list file are kept even if they do not exist: ingest records them as
    rejected (`unreadable`), so nothing a user asked for disappears silently.
    """
    seen: dict[str, str] = {}
    for arg in args:
        src = source or _default_source(arg)
        if is_url(arg):
            files = list(_expand_url(arg))
        else:
            local = os.path.abspath(arg.removeprefix("file://"))
            if any(c in arg for c in _GLOB_CHARS):
                files = sorted(os.path.abspath(p) for p in glob.glob(local, recursive=True) if os.path.isfile(p))
                if not files:
                    raise SupirDataError(f"glob matched no files: {arg}")
            elif os.path.isdir(local):
                files = list(_walk_local(local))
            elif os.path.isfile(local):
                files = list(_read_list(local)) if local.lower().endswith(LIST_SUFFIXES) else [local]
            else:
                raise SupirDataError(f"no such file or folder: {arg}")
        for f in files:
            seen.setdefault(f if is_url(f) else os.path.abspath(f), src)
    return sorted(seen.items())


def _default_source(arg: str) -> str:
    """Source name when --source is not given: the folder's (or list file's) name."""
    stripped = arg.rstrip("/").removeprefix("file://")
    if any(c in stripped for c in _GLOB_CHARS):
        stripped = stripped[: min(stripped.find(c) for c in _GLOB_CHARS if c in stripped)].rstrip("/")
    if os.path.isfile(stripped):
        is_list = stripped.lower().endswith(LIST_SUFFIXES)
        name = Path(stripped).stem if is_list else Path(os.path.abspath(stripped)).parent.name
    else:
        name = Path(stripped).name
    return name or "default"


def read_bytes(path: str) -> bytes:
    """The bytes of a catalog path: a local file (``file://`` allowed) or an fsspec URL (``s3://``...).

    Every stage reads images through this, so a catalog ingested from an object store shards,
    captions and scores like a local one (workers need the store's credentials in their environment).
    """
    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as fh:
            return fh.read()
    with open(path.removeprefix("file://"), "rb") as fh:
        return fh.read()

"""Where a data root lives: a local folder, or any fsspec URL (``s3://bucket/prefix``, ``gs://``...).

The lake's crash safety rests on one primitive, a file that appears complete or not at all: locally a
dot-temp file, fsynced, then renamed; on an object store a single PUT (or a completed multipart
upload), which the store makes visible atomically. Nothing here renames objects (S3 has no rename).
Credentials and endpoints come from the standard environment (``AWS_*``, ``AWS_ENDPOINT_URL``).
"""

import fnmatch
import os
import uuid
from dataclasses import dataclass
from pathlib import Path


def is_remote(root) -> bool:
    """True for an fsspec URL other than ``file://`` (those roots are plain folders)."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class Entry:
    """A listed file: its name in the folder, its URL (what DuckDB reads) and a version identity.

    ``identity`` changes whenever the file is rewritten (size and mtime locally, size and ETag on an
    object store), so a part replaced after it was compacted is told apart from a leftover copy.
    """

    name: str
    url: str
    identity: str
    size: int


class Store:
    """A data root. ``url`` is the canonical form: an absolute path, or ``s3://bucket/prefix``."""

    def __init__(self, root):
        text = str(root)
        if is_remote(text):
            import fsspec

            self.fs, base = fsspec.core.url_to_fs(text)
            self.base = base.rstrip("/")
            self.url = self.fs.unstrip_protocol(self.base).rstrip("/")
        else:
            self.fs = None
            self.base = str(Path(text.removeprefix("file://")).expanduser().resolve())
            self.url = self.base

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    # -- writing -----------------------------------------------------------------------------------
    def write_atomic(self, rel: str, write, sync_dir: bool = False) -> str:
        """Call ``write(fileobj)`` and make the result appear at ``rel`` all at once; returns its URL.

        ``sync_dir`` also makes the rename itself durable (for commit points such as a manifest).
        """
        path = self._path(rel)
        if self.remote:
            fh = self.fs.open(path, "wb")  # visible only when the upload completes (close)
            try:
                write(fh)
            except BaseException:
                fh.discard()  # abort the multipart upload; a context manager would commit the half file
                fh.closed = True
                raise
            fh.close()
            return self.url_of(rel)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{name}")
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if sync_dir:
            _fsync_dir(folder)
        return path

    def write_bytes(self, rel: str, data: bytes) -> str:
        return self.write_atomic(rel, lambda fh: fh.write(data), sync_dir=True)

    # -- reading -----------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        path = self._path(rel)
        try:
            if self.remote:
                return self.fs.cat_file(path)
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def open_read(self, rel_or_url: str):
        path = rel_or_url if rel_or_url.startswith(self.url + "/") else self.url_of(rel_or_url)
        if self.remote:
            return self.fs.open(self.fs._strip_protocol(path), "rb")
        return open(path, "rb")

    def list(self, rel_dir: str, pattern: str) -> list[Entry]:
        """Files directly in ``rel_dir`` whose name matches ``pattern``, sorted by name."""
        folder = self._path(rel_dir)
        out = []
        if self.remote:
            try:
                infos = self.fs.ls(folder, detail=True, refresh=True)
            except FileNotFoundError:
                return []
            for info in infos:
                name = info["name"].rstrip("/").rsplit("/", 1)[-1]
                if info.get("type") == "file" and fnmatch.fnmatchcase(name, pattern):
                    version = info.get("ETag") or info.get("LastModified") or info.get("mtime")
                    size = int(info.get("size") or 0)
                    out.append(Entry(name, self.url_of(f"{rel_dir}/{name}" if rel_dir else name), f"{size}:{version}", size))
        else:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                return []
            for e in entries:
                if fnmatch.fnmatchcase(e.name, pattern) and e.is_file():
                    st = e.stat()
                    out.append(Entry(e.name, os.path.join(folder, e.name), f"{st.st_size}:{st.st_mtime_ns}", st.st_size))
        return sorted(out, key=lambda e: e.name)

    def sizes(self, rel_dir: str) -> dict[str, int]:
        """URL -> size of every file under ``rel_dir``, recursively, in one listing (not a HEAD per file)."""
        folder = self._path(rel_dir)
        if self.remote:
            try:
                found = self.fs.find(folder, detail=True)
            except FileNotFoundError:
                return {}
            return {self.fs.unstrip_protocol(p): int(i.get("size") or 0) for p, i in found.items()}
        out = {}
        for dirpath, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                out[path] = os.path.getsize(path)
        return out

    def exists(self, rel: str) -> bool:
        path = self._path(rel)
        return self.fs.exists(path) if self.remote else os.path.exists(path)

    def size(self, rel: str) -> int | None:
        """The file's size in bytes, or None when it does not exist."""
        path = self._path(rel)
        try:
            return int(self.fs.size(path)) if self.remote else os.path.getsize(path)
        except FileNotFoundError:
            return None

    # -- deleting ----------------------------------------------------------------------------------
    def delete(self, url: str) -> None:
        """Remove one file by URL; a file already gone is fine (deletes are retried by recovery)."""
        try:
            if self.remote:
                self.fs.rm_file(self.fs._strip_protocol(url))
            else:
                os.unlink(url)
        except FileNotFoundError:
            pass


def split_url(url_or_path) -> tuple[Store, str]:
    """(the Store of a file's folder, the file's name): for one file given by path or URL."""
    text = str(url_or_path).rstrip("/")
    if not is_remote(text):
        folder, name = os.path.split(os.path.abspath(text.removeprefix("file://")))
        return Store(folder), name
    folder, _, name = text.rpartition("/")
    if not name or folder.endswith(":/"):
        raise ValueError(f"{url_or_path!r} names no file")
    return Store(folder), name


def open_file(url_or_path, mode: str = "rb"):
    """Open one file for reading by path or URL (s3://...: through fsspec, with the AWS_* environment)."""
    if is_remote(url_or_path):
        import fsspec

        return fsspec.open(str(url_or_path), mode).open()
    return open(str(url_or_path).removeprefix("file://"), mode)


def _fsync_dir(folder: str) -> None:
    """Make a rename durable: the directory entry, not only the file, must reach the disk."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

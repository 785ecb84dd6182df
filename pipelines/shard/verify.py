"""`supir-data verify`: are these shards exactly what `shard` wrote, complete, and decodable?

Per tar (one engine job each, :func:`verify_tar` is the pure function): the SHA-256 and size against
the manifest, the tar reads to its end, samples are contiguous with valid keys, every sample has one
GT, txt, json (with every spec field) and lq.png when the shard set was written with it, and every
image decodes (LQ at the GT's size). Problems are listed and the command exits 1.
"""

import json
import sys
import tarfile

import click
import cv2
import numpy as np

from catalogs.store import Store, open_file, split_url
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.runtime import Settings, init_ray
from pipelines.engine.stage import Stage
from pipelines.shard.stage import file_sha256
from schemas.errors import ConfigError
from schemas.runs import new_run_id
from schemas.sample import (
    GT_MEMBERS,
    LQ_MEMBER,
    MANIFEST_SUFFIX,
    META_FIELDS,
    META_MEMBER,
    TEXT_MEMBER,
    is_valid_key,
    manifest_name,
)


def _decode(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def check_sample(key: str, members: dict[str, bytes], expect_lq: bool | None) -> list[str]:
    """Problems of one sample (empty list: fine)."""
    problems = []
    if not is_valid_key(key):
        problems.append(f"{key}: invalid key (dots or slashes split webdataset keys)")
    gts = [m for m in GT_MEMBERS if m in members]
    if len(gts) != 1:
        problems.append(f"{key}: {len(gts)} gt members (expected exactly one of {', '.join(GT_MEMBERS)})")
    for member in (TEXT_MEMBER, META_MEMBER):
        if member not in members:
            problems.append(f"{key}: missing {member}")
    if expect_lq and LQ_MEMBER not in members:
        problems.append(f"{key}: missing {LQ_MEMBER} (shard set written with --lq precomputed)")
    if expect_lq is False and LQ_MEMBER in members:
        problems.append(f"{key}: unexpected {LQ_MEMBER} (shard set written with --lq none)")
    if META_MEMBER in members:
        try:
            meta = json.loads(members[META_MEMBER])
            missing = [f for f in META_FIELDS if f not in meta]
            if missing:
                problems.append(f"{key}: json lacks {', '.join(missing)}")
        except ValueError as exc:
            problems.append(f"{key}: json does not parse: {exc}")
    if TEXT_MEMBER in members:
        try:
            members[TEXT_MEMBER].decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{key}: txt is not UTF-8")
    gt = _decode(members[gts[0]]) if len(gts) == 1 else None
    if len(gts) == 1 and gt is None:
        problems.append(f"{key}: {gts[0]} does not decode")
    if LQ_MEMBER in members:
        lq = _decode(members[LQ_MEMBER])
        if lq is None:
            problems.append(f"{key}: {LQ_MEMBER} does not decode")
        elif gt is not None and lq.shape != gt.shape:
            problems.append(f"{key}: {LQ_MEMBER} is {lq.shape[1]}x{lq.shape[0]}, gt {gt.shape[1]}x{gt.shape[0]}")
    return problems


def verify_tar(path: str, expected: dict | None = None, expect_lq: bool | None = None) -> dict:
    """Check one tar (a path or an fsspec URL); ``expected`` = its manifest entry (sha256, bytes, samples)."""
    folder, name = split_url(path)
    result = {"path": str(path), "samples": 0, "problems": []}
    problems = result["problems"]
    size = folder.size(name)
    if size is None:
        problems.append(f"{name}: file is missing")
        return result
    if expected:
        if size != expected["bytes"]:
            problems.append(f"{name}: {size} bytes, manifest says {expected['bytes']}")
        elif file_sha256(path) != expected["sha256"]:
            problems.append(f"{name}: SHA-256 differs from the manifest (the file changed)")
    seen, key, members = set(), None, {}
    has_lq = set()

    def finish():
        if key is not None:
            problems.extend(f"{name}: {p}" for p in check_sample(key, members, expect_lq))
            result["samples"] += 1
            has_lq.add(LQ_MEMBER in members)

    try:
        with open_file(path) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                member_key, _, ext = info.name.partition(".")
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"{info.name} ends after {len(data)} of {info.size} bytes")
                if member_key != key:
                    finish()
                    if member_key in seen:
                        problems.append(f"{name}: {member_key}: members are not contiguous")
                    seen.add(member_key)
                    key, members = member_key, {}
                if ext in members:
                    problems.append(f"{name}: {member_key}: repeated member {ext}")
                members[ext] = data
        finish()
    except (tarfile.TarError, EOFError, OSError) as exc:
        problems.append(f"{name}: does not read to the end ({exc}) after {result['samples']} samples")
        return result
    if expect_lq is None and len(has_lq) > 1:
        problems.append(f"{name}: some samples have {LQ_MEMBER}, some do not")
    if expected and result["samples"] != expected["samples"]:
        problems.append(f"{name}: {result['samples']} samples, manifest says {expected['samples']}")
    return result


def _targets_from_manifest(manifest_path: str) -> list[tuple[str, dict | None, bool | None]]:
    folder, name = split_url(manifest_path)
    raw = folder.read_bytes(name)
    if raw is None:
        raise ConfigError(f"no manifest {manifest_path}; run `supir-data shard` (or pass tar paths)")
    manifest = json.loads(raw)
    expect_lq = manifest.get("config", {}).get("lq") == "precomputed"
    return [
        (folder.url_of(entry["path"]), entry, expect_lq)
        for split in manifest.get("splits", {}).values()
        for entry in split.get("shards", [])
    ]


def _targets_from_tars(tars: tuple[str, ...]) -> list[tuple[str, dict | None, bool | None]]:
    """Bare tar paths: use a manifest next to them, when one lists them, for checksums."""
    known: dict[str, tuple[dict, bool]] = {}
    urls, folders = {}, {}
    for tar in tars:
        folder, name = split_url(tar)
        urls[tar], folders[folder.url] = folder.url_of(name), folder
    for folder in folders.values():
        for manifest in folder.list("", f"*{MANIFEST_SUFFIX}"):
            for path, entry, expect_lq in _targets_from_manifest(manifest.url):
                known[path] = (entry, expect_lq)
    return [(urls[t], *known.get(urls[t], (None, None))) for t in tars]


class VerifyStage(Stage):
    """Items: ``{"path", "entry", "expect_lq"}``; rows: :func:`verify_tar` results, sent back, not stored."""

    name = "verify"
    collect = True

    def process_item(self, item: dict) -> dict:
        return verify_tar(item["path"], item["entry"], item["expect_lq"])

    def failure_row(self, item: dict, reason: str, detail: str) -> dict:
        return {"path": str(item["path"]), "samples": 0, "problems": [f"{str(item['path']).rsplit('/', 1)[-1]}: {reason}: {detail}"]}

    def outcome(self, row: dict | None) -> str:
        return "problem" if row and row["problems"] else "ok"


def run_verify(settings: Settings, targets: list[tuple[str, dict | None, bool | None]]) -> list[dict]:
    if not targets:
        raise ConfigError("nothing to verify: the manifest lists no shards")
    init_ray(settings)
    work = [{"path": path, "entry": entry, "expect_lq": expect_lq} for path, entry, expect_lq in targets]
    stats = run_stage(VerifyStage(), work, settings.root, new_run_id("verify"), Plan(part_items=1), save_stats=False)
    return sorted(stats.collected, key=lambda r: r["path"])


@click.command("verify")
@click.option("--name", default=None, help="Verify the shard set NAME (its manifest lists the tars) [default: supir].")
@click.option("--out", "out_dir", default=None, help="Folder of the shard set [default: ROOT/shards].")
@click.argument("tars", nargs=-1)
@click.pass_obj
def verify_command(settings: Settings, name, out_dir, tars):
    """Check shards: checksums, complete reads, complete samples, decodable images. Exits 1 on a problem."""
    if tars and name:
        raise ConfigError("give either --name or tar paths, not both")
    if tars:
        targets = _targets_from_tars(tars)
    else:
        folder = Store(out_dir) if out_dir else Store(Store(settings.root).url_of("shards"))
        targets = _targets_from_manifest(folder.url_of(manifest_name(name or "supir")))
    results = run_verify(settings, targets)
    problems = [p for r in results for p in r["problems"]]
    samples = sum(r["samples"] for r in results)
    unchecked = sum(1 for _, entry, _ in targets if entry is None)
    for problem in problems:
        click.echo(f"problem: {problem}")
    note = f" ({unchecked} without a manifest entry: no checksum)" if unchecked else ""
    click.echo(f"{len(results)} shards, {samples} samples, {len(problems)} problems{note}")
    if problems:
        sys.exit(1)

"""Quality thresholds: the bounds that turn the stored signals into a verdict, in Python and in SQL.

Thresholds are catalog-wide and applied at query time (`quality_reason_sql`), so changing them
re-judges every scanned image without decoding anything again. Defaults: pipelines/configs/quality.yaml;
a user YAML overrides them field by field. `migrate_thresholds` follows a recalibrated default when a
new signals version (SIGNALS_VERSION below) changes what a signal measures.
"""

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from schemas.errors import ConfigError
from schemas.tables import QUALITY_SIGNALS

DEFAULT_CONFIG = Path(__file__).parents[1] / "configs" / "quality.yaml"

# Fixed order in which `judge` checks signals: the first failure is the reason. Compression and noise
# come first because they also disturb the detail measures (noise adds fine detail, blocking adds edges).
JUDGE_ORDER = ("jpeg_quality", "blockiness", "noise_sigma", "sharpness", "edge_density", "clipping", "colorfulness",
               "flat_fraction")
assert sorted(JUDGE_ORDER) == sorted(QUALITY_SIGNALS)

# The definition of the signals (pipelines.ingest.quality) the defaults are calibrated for. 2: the
# half-scale luma behind sharpness and edge_density is an exact 2x2 mean. 3: analysis never reduced more
# than 2x; sharpness also reads the strongest edges; noise in the flattest blocks; flat_fraction. Recorded in each scans row's config_hash and in the catalog
# settings; see migrate_thresholds.
SIGNALS_VERSION = 3
# Default bounds a signals version recalibrated: {version: {(signal, side): the previous default}}.
_RECALIBRATED = {2: {("sharpness", "min"): 0.465},
                 3: {("sharpness", "min"): 0.442, ("noise_sigma", "max"): 9.0, ("blockiness", "max"): 1.2}}


@dataclass(frozen=True)
class Bounds:
    """Accepted range of one signal or metric; None disables that side."""

    min: float | None = None
    max: float | None = None

    def fails(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False  # not measured (e.g. jpeg_quality of a PNG): nothing to judge
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)

    def text(self) -> str:
        parts = [f"min {self.min:g}" if self.min is not None else "", f"max {self.max:g}" if self.max is not None else ""]
        return ", ".join(p for p in parts if p) or "not checked"


@dataclass(frozen=True)
class QualityThresholds:
    """Bounds per cheap signal (the names of schemas.tables.QUALITY_SIGNALS) and per pyiqa metric."""

    sharpness: Bounds = Bounds()
    noise_sigma: Bounds = Bounds()
    jpeg_quality: Bounds = Bounds()
    blockiness: Bounds = Bounds()
    colorfulness: Bounds = Bounds()
    clipping: Bounds = Bounds()
    edge_density: Bounds = Bounds()
    flat_fraction: Bounds = Bounds()
    iqa: dict[str, Bounds] = field(default_factory=dict)


assert {f.name for f in fields(QualityThresholds)} == {*QUALITY_SIGNALS, "iqa"}


def migrate_thresholds(
    stored: QualityThresholds, from_version: int, defaults: QualityThresholds
) -> tuple[QualityThresholds, list[str]]:
    """Thresholds a catalog stored under an older signals version, for the current signals.

    A bound that still equals the default of its time follows the recalibrated default; a bound the
    user chose (any other value) is kept. Returns the thresholds and one line per change.
    """
    changes = []
    for version in range(from_version + 1, SIGNALS_VERSION + 1):
        for (signal, side), old_default in _RECALIBRATED.get(version, {}).items():
            bounds = getattr(stored, signal)
            new_default = getattr(getattr(defaults, signal), side)
            if getattr(bounds, side) == old_default and new_default != old_default:
                stored = replace(stored, **{signal: replace(bounds, **{side: new_default})})
                changes.append(f"{signal} {side} {old_default} -> {new_default} (signals v{version})")
    return stored, changes


def _bounds(where: str, value, base: Bounds) -> Bounds:
    """Merge a YAML entry ({min: x, max: y}, or null to disable) over ``base``."""
    if value is None:
        return Bounds()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping like {{min: 0.5, max: null}} or null, got {value!r}")
    unknown = set(value) - {"min", "max"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: min, max")
    merged = {"min": base.min, "max": base.max}
    for key, bound in value.items():
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
            raise ConfigError(f"{where}.{key}: expected a number or null, got {bound!r}")
        merged[key] = None if bound is None else float(bound)
    if merged["min"] is not None and merged["max"] is not None and merged["min"] > merged["max"]:
        raise ConfigError(f"{where}: min {merged['min']} > max {merged['max']}")
    return Bounds(**merged)


def thresholds_from_dict(data: dict | None, base: QualityThresholds | None = None) -> QualityThresholds:
    """Override ``base`` (empty bounds if None) with a parsed YAML mapping; unknown keys are errors."""
    base = base or QualityThresholds()
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"quality thresholds: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - {*QUALITY_SIGNALS, "iqa"}
    if unknown:
        raise ConfigError(
            f"quality thresholds: unknown key(s) {sorted(unknown)}; known: {sorted(QUALITY_SIGNALS)} and iqa"
        )
    values = {name: _bounds(name, data[name], getattr(base, name)) if name in data else getattr(base, name)
              for name in QUALITY_SIGNALS}
    iqa = dict(base.iqa)
    if "iqa" in data:
        if data["iqa"] is None:
            iqa = {}
        elif not isinstance(data["iqa"], dict):
            raise ConfigError(f"iqa: expected a mapping of metric -> {{min, max}}, got {data['iqa']!r}")
        else:
            for metric, value in data["iqa"].items():
                iqa[str(metric)] = _bounds(f"iqa.{metric}", value, iqa.get(str(metric), Bounds()))
    return QualityThresholds(**values, iqa=iqa)


def _read_yaml(path: str | Path) -> dict:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"quality config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"quality config {path} is not valid YAML: {exc}") from None


def load_thresholds(path: str | None = None) -> QualityThresholds:
    """The defaults of pipelines/configs/quality.yaml, overridden field by field by the YAML at ``path``."""
    defaults = thresholds_from_dict(_read_yaml(DEFAULT_CONFIG))
    if path is None:
        return defaults
    try:
        return thresholds_from_dict(_read_yaml(path), defaults)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def judge(signals: dict[str, float | None], thresholds: QualityThresholds) -> str | None:
    """``"low_quality:<signal>"`` for the first signal (in ``JUDGE_ORDER``) out of bounds, else None."""
    for name in JUDGE_ORDER:
        if getattr(thresholds, name).fails(signals.get(name)):
            return f"low_quality:{name}"
    return None


def judge_iqa(scores: dict[str, float], thresholds: QualityThresholds) -> str | None:
    """``"low_quality:<metric>"`` for the first metric (alphabetical) out of its bounds, else None.

    A metric without configured bounds is recorded but never rejects.
    """
    for metric in sorted(scores):
        bounds = thresholds.iqa.get(metric)
        if bounds is not None and bounds.fails(scores[metric]):
            return f"low_quality:{metric}"
    return None


def quality_reason_sql(thresholds: QualityThresholds, table: str = "") -> str:
    """`judge` as a SQL expression over the stored signal columns (NULL when every signal passes).

    The catalog evaluates it in its views, so changing the thresholds re-judges every scanned image
    without decoding anything again. NULL (unmeasured) signals are not judged, as in `judge`.
    """
    col = f"{table}." if table else ""
    whens = []
    for name in JUDGE_ORDER:
        b: Bounds = getattr(thresholds, name)
        tests = []
        if b.min is not None:
            tests.append(f"{col}{name} < {float(b.min)!r}")
        if b.max is not None:
            tests.append(f"{col}{name} > {float(b.max)!r}")
        if tests:
            whens.append(f"WHEN NOT isnan({col}{name}) AND ({' OR '.join(tests)}) THEN 'low_quality:{name}'")
    return f"(CASE {' '.join(whens)} END)" if whens else "CAST(NULL AS VARCHAR)"


def thresholds_to_dict(thresholds: QualityThresholds) -> dict:
    """The YAML/JSON form that `thresholds_from_dict` reads back."""
    out = {name: {"min": getattr(thresholds, name).min, "max": getattr(thresholds, name).max}
           for name in QUALITY_SIGNALS}
    out["iqa"] = {m: {"min": b.min, "max": b.max} for m, b in sorted(thresholds.iqa.items())}
    return out

"""The report's plots: matplotlib (Agg, no display) rendered to inline SVG.

Inline SVG keeps the page one file, scales sharply and stays small (a histogram is a few KB); text is
kept as text (``svg.fonttype = none``) so the browser draws it in the page's font.

Cheap by construction: a histogram is one filled step outline per verdict category (``stairs``), not one
rectangle per bar, and figures have fixed margins (``bbox_inches="tight"`` would draw each figure twice).
The SVG is deterministic: a fixed hash salt for its element ids and no date in its metadata, so the
same catalog gives the same page.
"""

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.report.aggregate import CATEGORIES, Histogram  # noqa: E402

COLOURS = {CATEGORIES[0]: "#2a9d8f", CATEGORIES[1]: "#e63946", CATEGORIES[2]: "#b8c0c8"}
_STYLE = {
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#6c757d",
    "axes.labelcolor": "#343a40",
    "xtick.color": "#495057",
    "ytick.color": "#495057",
    "svg.hashsalt": "supir-data-report",  # element ids from a fixed salt, not a random one
}
_MARGINS = {"left": 0.15, "right": 0.95, "bottom": 0.13, "top": 0.88}  # right: room for half the last tick label


@matplotlib.ticker.FuncFormatter
def _compact(value, _pos) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


def histogram_svg(hist: Histogram) -> str:
    """Stacked bars per verdict category with the accepted range's bounds drawn as dashed lines."""
    edges = hist.edges()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.3, 2.3), gridspec_kw=_MARGINS)
        bottom = [0] * hist.bins
        for cat in CATEGORIES:
            counts = hist.counts.get(cat)
            if not counts:
                continue
            top = [b + c for b, c in zip(bottom, counts)]
            ax.stairs(top, edges, baseline=bottom, fill=True, color=COLOURS[cat], linewidth=0)
            bottom = top
        for side, value in (("min", hist.bound.min), ("max", hist.bound.max)):
            if value is None:
                continue
            ax.axvline(value, color="#212529", linestyle="--", linewidth=1.2)
            # Right of the line, unless that would run past the plot's right edge (a max near the end).
            right = (value - hist.lo) > 0.7 * (hist.hi - hist.lo)
            ax.annotate(f"{side} {value:g}", (value, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(-3 if right else 3, -2), textcoords="offset points", va="top",
                        ha="right" if right else "left", fontsize=8, color="#212529")
        ax.set_xlim(hist.lo, hist.hi)
        ax.yaxis.set_major_formatter(_compact)  # "2.5M", not an offset label the fixed margins might clip
        ax.set_ylabel(hist.unit if hist.every == 1 else f"{hist.unit}, 1 in {hist.every:,}")
        ax.set_title(hist.name, loc="left", fontsize=10, fontweight="bold", y=1.0)  # fixed y: no auto layout pass
        return _svg(fig)


def bars_svg(title: str, labels: list[str], values: list[int], colour: str = "#457b9d") -> str:
    """Horizontal bars (e.g. caption lengths per bin or samples per split)."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.3, 0.3 + 0.22 * max(len(labels), 3)),
                               gridspec_kw=_MARGINS | {"left": 0.3, "bottom": 0.08})
        ax.barh(range(len(labels)), values, color=colour)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold", y=1.0)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        return _svg(fig)

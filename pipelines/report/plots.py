"""The report's plots: matplotlib (Agg, no display) rendered to inline SVG.

Inline SVG keeps the page one file, scales sharply and stays small (a histogram is a few KB); text is
kept as text (``svg.fonttype = none``) so the browser draws it in the page's font.
"""

import io

import matplotlib

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
}


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


def histogram_svg(hist: Histogram) -> str:
    """Stacked bars per verdict category with the accepted range's bounds drawn as dashed lines."""
    edges = hist.edges()
    width = edges[1] - edges[0]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.3, 2.3))
        bottom = [0] * hist.bins
        for cat in CATEGORIES:
            counts = hist.counts.get(cat)
            if not counts:
                continue
            ax.bar(edges[:-1], counts, width=width, bottom=bottom, align="edge", color=COLOURS[cat],
                   edgecolor="white", linewidth=0.3)
            bottom = [b + c for b, c in zip(bottom, counts)]
        for side, value in (("min", hist.bound.min), ("max", hist.bound.max)):
            if value is None:
                continue
            ax.axvline(value, color="#212529", linestyle="--", linewidth=1.2)
            ax.annotate(f"{side} {value:g}", (value, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -2),
                        textcoords="offset points", va="top", fontsize=8, color="#212529")
        ax.set_xlim(hist.lo, hist.hi)
        ax.set_ylabel(hist.unit)
        ax.set_title(hist.name, loc="left", fontsize=10, fontweight="bold")
        return _svg(fig)


def bars_svg(title: str, labels: list[str], values: list[int], colour: str = "#457b9d") -> str:
    """Horizontal bars (e.g. caption lengths per bin or samples per split)."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.3, 0.3 + 0.22 * max(len(labels), 3)))
        ax.barh(range(len(labels)), values, color=colour)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        for i, v in enumerate(values):
            ax.annotate(f"{v:,}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        return _svg(fig)

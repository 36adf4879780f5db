"""`lungseg evaluate --html`: where predictions and references disagree, as pictures.

Per case, three planes through the largest disagreement: lung that both masks call the same
side in grey, false positives (predicted lung, reference background) orange, false negatives
(reference lung the prediction missed) cyan, lung given the wrong side magenta. Box plots show
the spread of Dice and HD95 over the cases, per structure.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lungseg.core.volume import Volume  # noqa: E402
from lungseg.io.safety import atomic_path  # noqa: E402
from lungseg.report.figures import _canonical, _display, png_bytes  # noqa: E402

__all__ = ["ERROR_COLOURS", "error_classes", "error_overlay_figure", "boxplot_figure",
           "write_evaluation_html"]

#: class value -> (name, RGB); 0 is background (black).
ERROR_COLOURS = {1: ("agreement", (0.62, 0.62, 0.62)), 2: ("false positive", (1.0, 0.55, 0.0)),
                 3: ("false negative", (0.0, 0.80, 0.95)), 4: ("wrong side", (0.85, 0.15, 0.85))}


def error_classes(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per voxel: 0 both background, 1 same label, 2 false positive, 3 false negative,
    4 lung in both with different sides."""
    out = np.zeros(pred.shape, np.uint8)
    p, r = pred > 0, ref > 0
    out[p & r & (pred == ref)] = 1
    out[p & ~r] = 2
    out[~p & r] = 3
    out[p & r & (pred != ref)] = 4
    return out


def error_overlay_figure(pred: Volume, ref: Volume, title: str = ""):
    """Axial, coronal and sagittal slices through the most disagreement (the lungs' centre
    when the masks agree), coloured by `error_classes`; a matplotlib Figure."""
    p, sp = _canonical(pred)
    r, _ = _canonical(ref)
    cls = error_classes(p, r)
    wrong = cls >= 2
    where = wrong if wrong.any() else cls > 0
    centre = [int(np.argmax(where.sum(axis=tuple(a for a in range(3) if a != ax))))
              for ax in range(3)]
    lut = np.zeros((5, 3))
    for k, (_, rgb) in ERROR_COLOURS.items():
        lut[k] = rgb
    planes = [("axial", cls[:, :, centre[2]], sp[1] / sp[0]),
              ("coronal", cls[:, centre[1], :], sp[2] / sp[0]),
              ("sagittal", cls[centre[0], :, :], sp[2] / sp[1])]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    for ax, (name, plane, aspect) in zip(axes, planes, strict=True):
        ax.imshow(lut[_display(plane)], aspect=aspect, interpolation="nearest")
        n_err = int(np.count_nonzero(plane >= 2))
        ax.set_title(f"{name} ({n_err} disagreeing voxels)", fontsize=9)
        ax.set_axis_off()
    handles = [plt.Rectangle((0, 0), 1, 1, color=rgb, label=name) for name, rgb in ERROR_COLOURS.values()]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(0, 0.1, 1, 0.9, wspace=0.05)
    return fig


def boxplot_figure(cases: list[dict]):
    """Box plots of Dice and HD95 (mm) over the cases for lungs, right and left (NaN left out)."""
    structures = ("lungs", "right", "left")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (key, label) in zip(axes, (("dice_{}", "Dice"), ("hd95_{}_mm", "HD95 (mm)")), strict=True):
        data = []
        for s in structures:
            vals = np.array([c[key.format(s)] for c in cases], float)
            data.append(vals[np.isfinite(vals)])
        ax.boxplot(data, tick_labels=structures, showmeans=True)
        for i, vals in enumerate(data, start=1):  # every case as a dot: a handful of cases is common
            ax.plot(np.full(len(vals), i) + np.linspace(-0.08, 0.08, len(vals)), vals, "o",
                    color="tab:blue", alpha=0.5, ms=4)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def write_evaluation_html(result: dict, overlays: dict[str, bytes], out: str | Path) -> Path:
    """The evaluation page: summary, box plots and each case's error overlay (PNG bytes by case)."""
    from lungseg.report.html import lungseg_version, page_json, png_uri, render

    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    cases = [{k: clean(v) for k, v in c.items()} for c in result["cases"]]
    summary = {k: ({kk: clean(vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
               for k, v in result["summary"].items()}
    page = render("evaluation.html.j2", cases=cases, summary=summary,
                  boxplots=png_uri(png_bytes(boxplot_figure(result["cases"]))),
                  overlays={k: png_uri(v) for k, v in overlays.items()},
                  colours={name: matplotlib.colors.to_hex(rgb)
                           for name, rgb in ERROR_COLOURS.values()},
                  version=lungseg_version(), data_json=page_json({"cases": cases, "summary": summary}))
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out

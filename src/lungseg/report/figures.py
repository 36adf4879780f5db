"""Figures people look at: training curves, mask overlays on the three planes, a slice montage.

Display convention (radiological, as in every viewer): the patient's right is on the viewer's
left in axial and coronal views, superior and anterior up. The right lung (label 1) is red,
the left lung (label 2) blue, in every figure lungseg draws.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from lungseg.core.anatomy import is_thin_view, view_axis  # noqa: E402
from lungseg.core.volume import Volume  # noqa: E402
from lungseg.io.safety import atomic_path  # noqa: E402

LUNG_WINDOW = (-1350.0, 150.0)  # HU, the usual lung window (level -600, width 1500)
COLOURS = {1: "tab:red", 2: "tab:blue"}
LEGEND = (("right lung", "tab:red"), ("left lung", "tab:blue"))


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for embedding in a page), closed afterwards."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Training loss and validation Dice against epoch."""
    rows = list(csv.DictReader(Path(metrics_csv).open(encoding="utf-8")))
    ep = [int(r["epoch"]) + 1 for r in rows if r["train_loss"]]
    loss = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    vep = [int(r["epoch"]) + 1 for r in rows if r.get("val_dice")]
    dice = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(ep, loss, color="tab:gray")
    ax[0].set(xlabel="epoch", ylabel="training loss", title="Loss")
    ax[1].plot(vep, dice, "o-", color="tab:green")
    ax[1].set(xlabel="epoch", ylabel="validation Dice (mean of lungs)", title="Validation Dice",
              ylim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
    return _save(fig, out_png)


def _canonical(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Array in RAS order (for display with anatomical conventions) and its spacing."""
    ornt = nib.orientations.io_orientation(volume.affine)
    arr = nib.orientations.apply_orientation(np.asarray(volume.array), ornt)
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)[ornt[:, 0].astype(int)]
    return arr, tuple(float(s) for s in spacing)


def _display(plane: np.ndarray) -> np.ndarray:
    """A plane of a RAS-ordered array as shown on screen: superior/anterior up, patient's
    right (high x) or anterior (high y) on the viewer's left."""
    return np.flipud(plane.T)[:, ::-1]


def _draw(ax, im: np.ndarray, lb: np.ndarray, aspect: float, fill: bool) -> None:
    ax.imshow(im, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], aspect=aspect,
              interpolation="nearest")
    for value, colour in COLOURS.items():
        inside = lb == value
        if not inside.any():
            continue
        if fill:
            rgba = np.zeros((*inside.shape, 4))
            rgba[inside] = matplotlib.colors.to_rgba(colour, 0.35)
            ax.imshow(rgba, aspect=aspect, interpolation="nearest")
        ax.contour(inside, levels=[0.5], colors=colour, linewidths=1.0)  # callers pass no one-row plane
    ax.set_axis_off()


def _lung_centre(lab: np.ndarray) -> np.ndarray:
    idx = np.argwhere(lab > 0)
    centre = idx.mean(axis=0).astype(int) if len(idx) else np.array(lab.shape) // 2
    right = np.argwhere(lab == 1)
    if len(right):  # sagittal through the right lung, not the mediastinum
        centre[0] = int(right[:, 0].mean())
    return centre


def _thin_across(shape, sp) -> int | None:
    """The axis a RAS-ordered thin view is thin across (`core.anatomy.view_axis`): 0 sagittal,
    1 coronal, 2 axial (a slab or a slice); None for a taller view or a whole scan."""
    grid = np.diag([*sp, 1.0])
    return view_axis(shape, grid) if is_thin_view(shape, grid) else None


def overlay_figure(image: Volume, mask: Volume, title: str = "", fill: bool = False,
                   warnings: Sequence[str] = ()):
    """Axial, coronal and sagittal slices through the lungs' centre with the mask drawn on
    (contours; with `fill`, also a translucent fill); a matplotlib Figure. A plane that a thin
    view shows as a line (a single axial, coronal or sagittal slice) is left out. `warnings`
    (the quality checks' failed messages) are written under the planes, so that a picture
    looked at alone still says where the mask is doubtful."""
    img, sp = _canonical(image)
    lab, _ = _canonical(mask)
    c = _lung_centre(lab)
    planes = [
        ("axial", img[:, :, c[2]], lab[:, :, c[2]], sp[1] / sp[0]),
        ("coronal", img[:, c[1], :], lab[:, c[1], :], sp[2] / sp[0]),
        ("sagittal", img[c[0], :, :], lab[c[0], :, :], sp[2] / sp[1]),
    ]
    planes = [p for p in planes if min(p[1].shape) >= 2]
    lines = [line for w in warnings for line in textwrap.wrap(f"warning: {w}", width=40 * len(planes) + 10)]
    extra = 0.2 * len(lines)  # inches of warning text between the planes and the legend
    height = 4.6 + extra
    fig, axes = plt.subplots(1, len(planes), figsize=(13 * len(planes) / 3 + 0.5, height), squeeze=False)
    for ax, (name, im, lb, aspect) in zip(axes[0], planes, strict=True):
        _draw(ax, _display(im), _display(lb), aspect, fill)
        ax.set_title(name)
    handles = [plt.Line2D([], [], color=c, lw=3, label=n) for n, c in LEGEND]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    if lines:  # room made above the legend (figure-relative places move with bbox_inches="tight")
        fig.subplots_adjust(bottom=(0.5 + extra) / height, top=1 - 0.55 / height)
        fig.text(0.5, 0.42 / height, "\n".join(lines), ha="center", va="bottom", color="tab:orange",
                 fontsize=10, linespacing=1.3)
    return fig


def plot_overlay(image: Volume, mask: Volume, out_png: str | Path, title: str = "",
                 warnings: Sequence[str] = ()) -> Path:
    """Axial, coronal and sagittal slices through the lungs with the mask's contours and,
    under them, any `warnings` of the quality checks.

    Radiological convention: the patient's right lung (label 1, red) appears on the
    left of axial and coronal views.
    """
    return _save(overlay_figure(image, mask, title, warnings=warnings), out_png)


def montage_figure(image: Volume, mask: Volume, n: int = 12, cols: int = 6):
    """`n` axial slices evenly spaced from the lung apices to the bases, cropped to the lungs,
    each labelled with its distance below the apex (mm); a matplotlib Figure. A coronal or
    sagittal thin view, whose axial slices are lines, shows its own slices instead (up to `n`)."""
    img, sp = _canonical(image)
    lab, _ = _canonical(mask)
    across = _thin_across(lab.shape, sp)
    if across in (0, 1):
        ks = np.unique(np.round(np.linspace(0, lab.shape[across] - 1, min(n, lab.shape[across]))).astype(int))
        aspect = sp[2] / sp[1 - across]  # x (coronal) or y (sagittal) across the page, z up
        fig, axes = plt.subplots(1, len(ks), figsize=(min(13.0, 4.4 * len(ks)), 4.6), squeeze=False)
        for ax, k in zip(axes[0], ks, strict=True):
            _draw(ax, _display(np.take(img, k, axis=across)), _display(np.take(lab, k, axis=across)), aspect,
                  fill=True)
            ax.set_title(f"{('sagittal', 'coronal')[across]} slice {k + 1} of {lab.shape[across]}", fontsize=8)
        return fig
    z_any = np.flatnonzero((lab > 0).any(axis=(0, 1)))
    if len(z_any) == 0:
        z_any = np.arange(lab.shape[2])
    top, bottom = int(z_any[-1]), int(z_any[0])  # RAS: high k is superior (apex)
    ks = np.unique(np.round(np.linspace(top, bottom, n)).astype(int))[::-1]
    xy = np.argwhere((lab > 0).any(axis=2))
    if len(xy):
        pad = 8
        lo = np.maximum(xy.min(axis=0) - pad, 0)
        hi = np.minimum(xy.max(axis=0) + pad + 1, lab.shape[:2])
    else:
        lo, hi = np.zeros(2, int), np.array(lab.shape[:2])
    rows = int(np.ceil(len(ks) / cols))
    w = (hi[0] - lo[0]) * sp[0]
    h = (hi[1] - lo[1]) * sp[1]
    tile = 2.2
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile, rows * tile * h / max(w, 1e-6) + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, k in zip(axes.flat, ks, strict=False):
        im = img[lo[0]:hi[0], lo[1]:hi[1], k]
        lb = lab[lo[0]:hi[0], lo[1]:hi[1], k]
        _draw(ax, _display(im), _display(lb), sp[1] / sp[0], fill=True)
        ax.set_title(f"{(top - k) * sp[2]:.0f} mm below apex", fontsize=8)
    fig.tight_layout()
    return fig


def thumbnail_figure(image: Volume, mask: Volume):
    """One small slice through the lungs with the mask filled in (for the cohort table): coronal,
    or axial when the lungs are far wider than tall; a thin view's own plane."""
    img, sp = _canonical(image)
    lab, _ = _canonical(mask)
    c = _lung_centre(lab)
    idx = np.argwhere(lab > 0)
    span = (np.ptp(idx, axis=0) + 1) * np.asarray(sp) if len(idx) else np.ones(3)
    fig, ax = plt.subplots(figsize=(1.6, 1.6))
    thin = _thin_across(lab.shape, sp)
    if thin == 0:  # a sagittal slab: its own plane
        _draw(ax, _display(img[c[0], :, :]), _display(lab[c[0], :, :]), sp[2] / sp[1], fill=True)
    elif thin == 1 or (thin is None and span[2] >= 0.4 * span[0]):
        _draw(ax, _display(img[:, c[1], :]), _display(lab[:, c[1], :]), sp[2] / sp[0], fill=True)
    else:
        _draw(ax, _display(img[:, :, c[2]]), _display(lab[:, :, c[2]]), sp[1] / sp[0], fill=True)
    fig.subplots_adjust(0, 0, 1, 1)
    return fig

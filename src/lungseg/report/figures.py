"""Figures people look at: training curves and mask overlays on the three planes."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from lungseg.core.volume import Volume  # noqa: E402
from lungseg.io.safety import atomic_path  # noqa: E402

LUNG_WINDOW = (-1350.0, 150.0)  # HU, the usual lung window (level -600, width 1500)
COLOURS = {1: "tab:red", 2: "tab:blue"}


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Training loss and validation Dice against epoch."""
    rows = list(csv.DictReader(Path(metrics_csv).open()))
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


def plot_overlay(image: Volume, mask: Volume, out_png: str | Path, title: str = "") -> Path:
    """Axial, coronal and sagittal slices through the lungs with the mask's contours.

    Radiological convention: the patient's right lung (label 1, red) appears on the
    left of axial and coronal views.
    """
    img, sp = _canonical(image)
    lab, _ = _canonical(mask)
    idx = np.argwhere(lab > 0)
    centre = idx.mean(axis=0).astype(int) if len(idx) else np.array(img.shape) // 2
    right = np.argwhere(lab == 1)
    if len(right):  # sagittal through the right lung, not the mediastinum
        centre[0] = int(right[:, 0].mean())
    planes = [
        ("axial", img[:, :, centre[2]], lab[:, :, centre[2]], (sp[0], sp[1])),
        ("coronal", img[:, centre[1], :], lab[:, centre[1], :], (sp[0], sp[2])),
        ("sagittal", img[centre[0], :, :], lab[centre[0], :, :], (sp[1], sp[2])),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, (name, im, lb, (s0, s1)) in zip(axes, planes, strict=True):
        # RAS axes point to the patient's right/anterior/superior: put superior/anterior up,
        # and the patient's right (high x) or anterior (high y) on the viewer's left.
        im_d = np.flipud(im.T)[:, ::-1]
        lb_d = np.flipud(lb.T)[:, ::-1]
        ax.imshow(im_d, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1],
                  aspect=s1 / s0, interpolation="nearest")
        for value, colour in COLOURS.items():
            if (lb_d == value).any():
                ax.contour(lb_d == value, levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(name)
        ax.set_axis_off()
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in (("right lung", "tab:red"), ("left lung", "tab:blue"))]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)

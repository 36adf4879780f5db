"""`make pretrained`: build the shipped default model, reproducibly, in two stages.

Stage 1: synthesise phantoms with every variation on (``lungseg.synth(variations=True)``),
train the reference U-Net at a 2.5 mm working spacing for a fixed number of epochs (fixed
seeds, so a rerun reproduces the weights up to CPU floating-point noise) -> OUT/stage1.pt.
Stage 2 (`scripts/finetune.py`): fine-tune on masses, real scans with teacher masks, slabs
and cut views -> OUT/stage2/default.pt. Then store float16 weights (< 10 MB) as OUT/default.pt
and report Dice per variation on held-out phantoms (new seeds) for the model and for the
classical method. ``--install`` copies the weights and that report into the package.

Measured on 2 CPU cores: see docs/model.md.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from lungseg.training.recipes import RECIPES

#: Everything that defines the default model (with the `default-model` training recipe).
#: Changing it changes the shipped weights.
DATA = {
    "n_train": 32,
    "n_val": 4,
    "n_test": 24,
    "size": 256,
    "seed_train": 1000,
    "seed_val": 5000,
    "seed_test": 90000,
}
RECIPE = {**DATA, "training": "default-model", **{k: RECIPES["default-model"][k] for k in (
    "preprocessing", "roi_size", "max_epochs", "lr", "num_samples", "batch_size")}}

#: The shipped model in the source tree (a build step writes it; nothing at run time does).
INSTALLED = Path(__file__).resolve().parents[1] / "src" / "lungseg" / "models" / "default.pt"


def variation_groups(params: dict) -> list[str]:
    """Names of the variations a phantom shows, for per-variation reporting."""
    g = ["all"]
    g.append("contrast" if params.get("contrast") else "non-contrast")
    g.append(params.get("breath", "inspiration"))
    g.append(f"{params.get('kernel', 'smooth')} kernel")
    st = params.get("slice_thickness", 1.5)
    g.append("slices < 1.5 mm" if st < 1.5 else "slices 1.5-3 mm" if st < 3 else "slices >= 3 mm")
    g.append("low-dose noise (sd > 30 HU)" if params.get("noise_sd", 0) > 30 else "noise sd <= 30 HU")
    if params.get("streaks", 0) > 0:
        g.append("shoulder streaks")
    if params.get("crop", "none") != "none":
        g.append(f"FOV cropped ({params['crop']})")
    g.append(f"arms {params.get('arms', 'up')}")
    if abs(params.get("rotation_deg", 0)) > 3:
        g.append("rotated > 3 deg")
    for key, name in (("nodules", "nodules"), ("consolidation", "consolidation"),
                      ("ground_glass", "ground-glass")):
        if params.get(key):
            g.append(name)
    if params.get("emphysema", 0) > 0:
        g.append("emphysema")
    if max(params.get("effusion_mm", (0, 0))) > 0:
        g.append("pleural effusion")
    return g


def heldout_report(model: str | Path | None, test_dir: Path, out: Path) -> dict:
    """Dice per variation on held-out phantoms for the model and the classical method."""
    from lungseg.evaluation import case_metrics
    from lungseg.inference.predictor import Predictor
    from lungseg.inference.segment import segment
    from lungseg.io.volumes import read_volume

    info = json.loads((test_dir / "dataset.json").read_text())
    predictor = Predictor(model)
    per_case = []
    for entry, ph in zip(info["training"], info["phantoms"], strict=True):
        image = read_volume(test_dir / entry["image"])
        truth = read_volume(test_dir / entry["label"])
        row = {"case": Path(entry["image"]).name, "groups": variation_groups(ph["params"])}
        for method in ("unet", "classical"):
            t0 = time.perf_counter()
            mask = segment(image, method=method, predictor=predictor if method == "unet" else None)
            m = case_metrics(mask, truth)
            row[method] = {"dice": m["dice_lungs"], "dice_right": m["dice_right"],
                           "dice_left": m["dice_left"], "seconds": time.perf_counter() - t0}
        per_case.append(row)
        print(f"  {row['case']}: unet {row['unet']['dice']:.3f}  classical {row['classical']['dice']:.3f}")
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in per_case:
        for g in row["groups"]:
            for method in ("unet", "classical"):
                groups[g][method].append(row[method]["dice"])
    table = {g: {"n": len(v["unet"]), "unet": float(np.mean(v["unet"])),
                 "classical": float(np.mean(v["classical"]))} for g, v in groups.items()}
    report = {"cases": per_case, "by_variation": table}
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(report, indent=1))
    return report


def format_variation_table(report: dict) -> str:
    lines = ["| variation | n | default model Dice | classical Dice |", "|---|---:|---:|---:|"]
    for g, v in report["by_variation"].items():
        lines.append(f"| {g} | {v['n']} | {v['unet']:.3f} | {v['classical']:.3f} |")
    return "\n".join(lines)


def install(out: str | Path) -> Path:
    """Copy a built model into the package, with its held-out summary beside it (default.json)."""
    out = Path(out)
    report = json.loads((out / "heldout.json").read_text())
    INSTALLED.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "default.pt", INSTALLED)
    from finetune import STAGE2

    card = {"recipe": RECIPE, "stage2": STAGE2, "heldout_by_variation": report["by_variation"]}
    INSTALLED.with_suffix(".json").write_text(json.dumps(card, indent=1))
    print(f"installed {INSTALLED} ({INSTALLED.stat().st_size / 2**20:.1f} MiB)")
    return INSTALLED


def compare_with_shipped(report: dict) -> float | None:
    """Held-out Dice of this build minus the shipped model's (same phantoms, same recipe)."""
    card_path = INSTALLED.with_suffix(".json")
    if not card_path.exists():
        return None
    shipped = json.loads(card_path.read_text())["heldout_by_variation"]["all"]["unet"]
    rebuilt = report["by_variation"]["all"]["unet"]
    print(f"held-out Dice: rebuilt {rebuilt:.4f}, shipped {shipped:.4f}, difference {rebuilt - shipped:+.4f}")
    return rebuilt - shipped


def build(out: str | Path = "runs/pretrained", epochs: int | None = None, stage2: bool = True) -> dict:
    """Stage 1 (phantoms, from scratch) then stage 2 (`scripts/finetune.py`), held-out report."""
    from lungseg.networks import load_model, save_checkpoint
    from lungseg.phantoms import synth
    from lungseg.training.config import TrainConfig
    from lungseg.training.loop import train

    out = Path(out)
    r = RECIPE
    t0 = time.monotonic()
    data = out / "data"
    for name, n, seed in (("train", r["n_train"], r["seed_train"]), ("val", r["n_val"], r["seed_val"]),
                          ("test", r["n_test"], r["seed_test"])):
        if not (data / name / "dataset.json").exists():
            synth(n, data / name, seed=seed, size=r["size"], variations=True)
    cfg = TrainConfig(data=str(data / "train"), val_data=str(data / "val"), out=str(out),
                      recipe="default-model", max_epochs=epochs or r["max_epochs"], seed=0)
    summary = train(cfg)
    model, settings = load_model(out / "best.pt")
    settings["trained"] = {"recipe": r, "summary": summary}
    save_checkpoint(out / "stage1.pt", model, settings, half=True)
    print(f"stage 1 done in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    if stage2:
        from finetune import build_stage2  # scripts/finetune.py, beside this file

        shutil.copyfile(build_stage2(out / "stage2", out / "stage1.pt"), out / "default.pt")
    else:
        shutil.copyfile(out / "stage1.pt", out / "default.pt")
    print("held-out phantoms (new seeds, all variations):")
    report = heldout_report(out / "default.pt", data / "test", out)
    print(format_variation_table(report))
    compare_with_shipped(report)
    print(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    return report


def main(out: Annotated[Path, typer.Option(help="build folder")] = Path("runs/pretrained"),
         install_weights: Annotated[bool, typer.Option("--install", help="copy the weights into src/")] = False,
         install_only: Annotated[bool, typer.Option(help="install an already built --out")] = False,
         epochs: Annotated[int | None, typer.Option(min=1, help="stage-1 epochs")] = None,
         stage2: Annotated[bool, typer.Option(help="also run stage 2 (scripts/finetune.py)")] = True) -> None:
    """Build the shipped default model (stage 1 + stage 2) and optionally install it."""
    if not install_only:
        build(out, epochs, stage2)
    if install_weights or install_only:
        install(out)


if __name__ == "__main__":
    typer.run(main)

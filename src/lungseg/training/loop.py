"""The patch-based training loop of the reference recipe, made resumable and bounded in time.

Writes into the run folder: config.yaml (resolved), metrics.csv, curves.png, best.pt
(highest validation Dice), last.pt (for --resume).
"""

from __future__ import annotations

import csv
import json
import math
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import compute_dice
from monai.transforms import Compose
from monai.utils import set_determinism
from tqdm.auto import tqdm

from lungseg.core.errors import InputError, LungsegError
from lungseg.io.datasets import find_cases
from lungseg.io.safety import atomic_path
from lungseg.networks import build_unet, load_checkpoint, resolve_device, save_checkpoint
from lungseg.training.config import TrainConfig
from lungseg.training.distributed import broadcast_flag, cleanup, init_distributed, shard
from lungseg.transforms import train_transforms, val_transforms

METRIC_FIELDS = ["epoch", "step", "train_loss", "val_dice", "val_dice_right", "val_dice_left",
                 "lr", "elapsed_s"]  # per-side columns stay empty for 2-class (lung) networks


def split_cases(cases: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic train/validation split; at least one case on each side when possible."""
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(cases) * val_fraction)) if len(cases) > 1 else 0
    val = [cases[i] for i in sorted(order[:n_val])]
    train = [cases[i] for i in sorted(order[n_val:])]
    return train, val


def _as_dicts(cases: list) -> list[dict]:
    out = []
    for c in cases:
        if c.label is None:
            raise InputError("training case has no label", c.image)
        out.append({"image": str(c.image), "label": str(c.label), "name": c.name})
    return out


def autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """Mixed precision: float16 on CUDA (`amp`, with a gradient scaler), bfloat16 on the CPU
    (`cpu_bf16`; same exponent range as float32, so no scaler)."""
    if device.type == "cuda":
        return torch.autocast("cuda", enabled=cfg.amp)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.cpu_bf16 and device.type == "cpu")


def validate(model: torch.nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device) -> dict:
    """Mean foreground Dice by sliding window on whole resampled volumes (per lung for 3 classes)."""
    # functional compute_dice: DiceMetric would try to sync with ranks that do not validate
    scores = []
    n_classes = int(cfg.network.out_channels)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device)
            with autocast(cfg, device):
                logits = sliding_window_inference(x, cfg.val_roi_size, 1, model,
                                                  overlap=cfg.val_overlap, mode="gaussian")
            pred = torch.argmax(logits, dim=1, keepdim=True).cpu()
            onehot_pred = torch.nn.functional.one_hot(pred[:, 0].long(), n_classes).permute(0, 4, 1, 2, 3)
            lab = batch["label"].long()
            onehot_ref = torch.nn.functional.one_hot(lab[:, 0], n_classes).permute(0, 4, 1, 2, 3)
            scores.append(compute_dice(onehot_pred, onehot_ref, include_background=False))
    per_class = [float(v) for v in torch.nanmean(torch.cat(scores), dim=0)]
    model.train()
    out = {"val_dice": float(np.mean(per_class))}
    if n_classes == 3:
        out.update(val_dice_right=per_class[0], val_dice_left=per_class[1])
    return out


def _join_threads_started_since(before: set, timeout_s: float = 120.0) -> None:
    """Wait for the threads a failed block left running (MONAI's caching ThreadPool stops
    handing out work on an error but does not wait for the items in flight): a thread still
    inside ITK or torch when Python exits makes the C++ runtime abort (SIGABRT, exit 134,
    "terminate called without an active exception")."""
    deadline = time.monotonic() + timeout_s
    for t in threading.enumerate():
        if t not in before and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))


@contextmanager
def user_errors_unwrapped():
    """MONAI wraps transform errors in RuntimeError; surface our LungsegError (-> exit 2).

    On any error the data-loading threads the block started are joined first."""
    before = set(threading.enumerate())
    try:
        yield
    except BaseException as exc:
        _join_threads_started_since(before)
        if isinstance(exc, RuntimeError):
            cause: BaseException | None = exc
            while cause is not None:
                if isinstance(cause, LungsegError):
                    raise cause from None
                cause = cause.__cause__ or cause.__context__
        raise


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at a fraction `progress` (0..1) of the run."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    lo = cfg.lr * 0.01
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * min(1.0, progress)))


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in METRIC_FIELDS})


#: What `last.pt` carries besides the weights, and the types it must have.
RESUME_FIELDS: dict[str, tuple[type, ...]] = {"optimizer": (dict,), "epoch": (int,), "best_dice": (int, float),
                                              "step": (int,), "elapsed_s": (int, float)}


def _resume_state(cfg: TrainConfig, out: Path) -> dict:
    """The validated `last.pt` of a run to resume; refuses one from another network or preprocessing."""
    last = out / "last.pt"
    if not last.exists():
        raise InputError("nothing to resume: the run folder has no last.pt (drop --resume to start a new run)",
                         out)
    state = load_checkpoint(last)
    for key, types in RESUME_FIELDS.items():
        if key not in state:
            raise InputError(f"checkpoint has no {key} field (not a last.pt written by lungseg train?)", last)
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, types) or (
                key != "optimizer" and not math.isfinite(value)) or (key in ("epoch", "step") and value < 0):
            raise InputError(f"checkpoint field {key} is invalid ({type(value).__name__} {str(value)[:40]})", last)
    if not isinstance(state["optimizer"].get("state"), dict) or not isinstance(
            state["optimizer"].get("param_groups"), list):
        raise InputError("checkpoint field optimizer is not an optimizer state (no state/param_groups)", last)
    wanted = cfg.settings()
    for part in ("network", "preprocessing"):
        have, want = state["settings"][part], wanted[part]
        for key in want:
            if have.get(key) != want[key]:
                raise InputError(f"cannot resume: last.pt has settings.{part}.{key} = {have.get(key)}, "
                                 f"the config has {want[key]} (use the run's config.yaml or a new --out)", last)
    return state


def train(config: TrainConfig | None = None, **kwargs: Any) -> dict:
    """Train a U-Net with the patch-based recipe; returns a summary dict.

    Example (on phantoms, a few seconds of training)::

        import lungseg
        lungseg.synth(4, "data/ph", size=64)
        lungseg.train(data="data/ph", out="runs/tiny", max_epochs=1, roi_size=[32, 32, 32],
                      val_roi_size=[64, 64, 64], network={"channels": [8, 16, 32, 64, 128]})
    """
    cfg = config or TrainConfig.validated(kwargs)
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError("run folder (--out) is an existing file, not a folder", out)
    # a refused --resume must leave the run folder as it was: check it before writing anything
    resume_state = _resume_state(cfg, out) if cfg.resume else None
    set_determinism(cfg.seed + info.rank)

    cases = find_cases(cfg.data, cfg.layout)
    if cfg.val_data:
        train_cases, val_cases = cases, find_cases(cfg.val_data, cfg.layout)
    else:
        train_cases, val_cases = split_cases(cases, cfg.val_fraction, cfg.seed)
    if not train_cases:
        raise InputError("no training cases found", cfg.data)


    binary = int(cfg.network.out_channels) == 2
    cached, rand = train_transforms(cfg.preprocessing.model_dump(), cfg.roi_size, cfg.num_samples, cfg.label_mapping, binary,
                                   slab_prob=cfg.slab_prob, mass_prob=cfg.mass_prob,
                                   fibrosis_prob=cfg.fibrosis_prob, collapse_prob=cfg.collapse_prob,
                                   pneumonia_prob=cfg.pneumonia_prob)
    with user_errors_unwrapped():
        train_ds = CacheDataset(_as_dicts(shard(train_cases, info)), Compose([*cached.transforms, *rand.transforms]),
                                progress=cfg.progress and info.is_main, num_workers=None)
    # each volume gives num_samples patches; enough volumes per load to fill batch_size, then
    # split into optimiser steps of batch_size (the tutorial: 2 volumes x 4 patches = 8)
    train_loader = DataLoader(train_ds, batch_size=max(1, cfg.batch_size // cfg.num_samples), shuffle=True,
                              num_workers=cfg.num_workers, collate_fn=list_data_collate)
    val_loader = None
    if val_cases and info.is_main:
        with user_errors_unwrapped():
            val_ds = CacheDataset(_as_dicts(val_cases), val_transforms(cfg.preprocessing.model_dump(), cfg.label_mapping, binary),
                                  progress=False, num_workers=None)
        val_loader = DataLoader(val_ds, batch_size=1, num_workers=0)

    if info.is_main:  # only once the data have loaded: bad input leaves no run folder files
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(cfg.to_yaml())
        with atomic_path(out / "split.json") as tmp:
            tmp.write_text(json.dumps({"train": [c.name for c in train_cases],
                                       "val": [c.name for c in val_cases]}, indent=1))

    model = build_unet(cfg.network.model_dump()).to(device)
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = (DiceCELoss if cfg.loss == "dicece" else DiceLoss)(to_onehot_y=True, softmax=True)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")

    start_epoch, best, step, elapsed_before = 0, -1.0, 0, 0.0
    if cfg.init_weights and resume_state is None:
        init = load_checkpoint(cfg.init_weights)
        if init["settings"].get("network") not in (None, cfg.network.model_dump(mode="json")):
            raise InputError("init_weights: its network settings differ from the config's network",
                             cfg.init_weights)
        (model.module if info.enabled else model).load_state_dict(
            {k: v.float() for k, v in init["state_dict"].items()})
    if resume_state is not None:
        state = resume_state
        (model.module if info.enabled else model).load_state_dict(state["state_dict"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise InputError(f"optimizer state does not fit this network ({exc})".splitlines()[0],
                             out / "last.pt") from None
        start_epoch, best = int(state["epoch"]) + 1, float(state["best_dice"])
        step, elapsed_before = int(state["step"]), float(state["elapsed_s"])

    settings = cfg.settings()
    t0 = time.monotonic() - elapsed_before
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    last_val: dict = {}
    bar = tqdm(range(start_epoch, cfg.max_epochs), desc="train", disable=not (cfg.progress and info.is_main),
               initial=start_epoch, total=cfg.max_epochs)
    epoch = start_epoch - 1
    stop = False
    for epoch in bar:
        model.train()
        losses = []
        n_items, n_done = len(train_loader), 0
        for batch in train_loader:
            n_done += 1
            x, y = batch["image"].to(device), batch["label"].to(device)
            # patches from several volumes arrive as one batch; keep it at cfg.batch_size
            for i in range(0, x.shape[0], cfg.batch_size):
                progress = (epoch + n_done / n_items) / cfg.max_epochs
                if cfg.max_minutes:
                    progress = max(progress, (time.monotonic() - t0) / (cfg.max_minutes * 60))
                lr = lr_at(cfg, progress)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                with autocast(cfg, device):
                    logits = model(x[i:i + cfg.batch_size])
                loss = loss_fn(logits.float(), y[i:i + cfg.batch_size])
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                step += 1
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}",
                                dice=f"{last_val.get('val_dice', float('nan')):.3f}")
            if broadcast_flag(time.monotonic() > deadline, info):
                stop = True
                break
        row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else "",
               "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(time.monotonic() - t0, 1)}
        last_epoch = epoch == cfg.max_epochs - 1
        if info.is_main:
            if val_loader is not None and ((epoch + 1) % cfg.val_every == 0 or stop or last_epoch):
                # the bare module: a DDP forward would wait for ranks that do not validate
                last_val = validate(model.module if info.enabled else model, val_loader, cfg, device)
                row.update(last_val)
                if last_val["val_dice"] > best:
                    best = last_val["val_dice"]
                    save_checkpoint(out / "best.pt", model, settings,
                                    {"epoch": epoch, "val_dice": best, "step": step})
            elif val_loader is None:
                save_checkpoint(out / "best.pt", model, settings, {"epoch": epoch, "step": step})
            _append_metrics(out / "metrics.csv", row)
            save_checkpoint(out / "last.pt", model, settings,
                            {"epoch": epoch, "best_dice": best, "step": step,
                             "elapsed_s": time.monotonic() - t0, "optimizer": optimizer.state_dict()})
        if stop:
            break
    bar.close()
    summary = {"out": str(out), "epochs": epoch + 1, "steps": step, "best_val_dice": best,
               "minutes": round((time.monotonic() - t0) / 60, 2)}
    if info.is_main:
        from lungseg.report.figures import plot_curves

        plot_curves(out / "metrics.csv", out / "curves.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    cleanup(info)
    return summary

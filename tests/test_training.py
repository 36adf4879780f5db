"""Training: the loss falls, the run folder holds what the README promises, resume works.

One training run per session (conftest `tiny_run`); tests that train further resume a copy."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY, TINY_EPOCHS, assert_no_leftovers

from lungseg.core.errors import LungsegError
from lungseg.networks import load_checkpoint
from lungseg.training.config import TrainConfig
from lungseg.training.loop import split_cases, train


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _adam_steps(checkpoint: Path) -> int:
    """Optimiser steps Adam has counted (restored on resume, 0 for a fresh optimiser)."""
    state = load_checkpoint(checkpoint)["optimizer"]["state"]
    return int(max(float(s["step"]) for s in state.values()))


@pytest.mark.slow
def test_training_lowers_the_loss_and_fills_the_run_folder(tiny_run):
    rows = _rows(tiny_run)
    losses = [float(r["train_loss"]) for r in rows]
    assert [int(r["epoch"]) for r in rows] == list(range(TINY_EPOCHS))
    # measured: 1.09 -> 0.15 (ratio 0.14) over the 20 epochs
    assert np.mean(losses[-2:]) < 0.4 * np.mean(losses[:2])
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml", "split.json", "summary.json"):
        assert (tiny_run / name).is_file(), name
    assert_no_leftovers(tiny_run)
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["roi_size"] == TINY["roi_size"] and cfg["max_epochs"] == TINY_EPOCHS
    val = {int(r["epoch"]): float(r["val_dice"]) for r in rows if r["val_dice"]}
    assert sorted(val) == [9, 19]
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["epochs"] == TINY_EPOCHS and summary["best_val_dice"] == pytest.approx(max(val.values()))
    assert summary["best_val_dice"] > 0.8  # measured 0.91: the tiny model finds the lungs
    ckpt = load_checkpoint(tiny_run / "best.pt")
    assert ckpt["settings"]["preprocessing"]["spacing"] == TINY["preprocessing"]["spacing"]
    assert ckpt["epoch"] == max(val, key=val.get)


@pytest.mark.slow
def test_resume_continues_from_last_epoch_and_optimizer(phantom_data, tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    before = _rows(run)
    steps_per_epoch = int(before[1]["step"]) - int(before[0]["step"])
    saved = load_checkpoint(run / "last.pt")
    assert saved["epoch"] == TINY_EPOCHS - 1 and _adam_steps(run / "last.pt") == saved["step"]
    summary = train(data=str(phantom_data), out=str(run), max_epochs=TINY_EPOCHS + 1, val_every=10,
                    resume=True, **TINY)
    after = _rows(run)
    assert after[:-1] == before  # history kept, one epoch appended
    new = after[-1]
    assert int(new["epoch"]) == TINY_EPOCHS and int(new["step"]) == saved["step"] + steps_per_epoch
    assert _adam_steps(run / "last.pt") == saved["step"] + steps_per_epoch  # optimizer state restored
    assert float(new["train_loss"]) < 0.5 * float(before[0]["train_loss"])  # weights restored
    assert summary["epochs"] == TINY_EPOCHS + 1
    assert json.loads((run / "summary.json").read_text())["epochs"] == TINY_EPOCHS + 1


def test_max_minutes_stops_mid_epoch_and_validates_once(phantom_data, tmp_path):
    # a limit shorter than one optimiser step: the run stops after its first batch, whatever the
    # machine's speed, so the assertions are on what was recorded, not on elapsed time.
    # One step and one validation (about 1 s): `make test-fast` keeps this smoke test of the loop.
    summary = train(data=str(phantom_data), out=str(tmp_path), max_epochs=500, max_minutes=1e-5,
                    val_every=100, **TINY)
    n_train = len(json.loads((tmp_path / "split.json").read_text())["train"])
    steps_per_epoch = n_train * TINY["num_samples"] // TINY["batch_size"]
    assert summary["epochs"] == 1 and 1 <= summary["steps"] < steps_per_epoch
    rows = _rows(tmp_path)
    assert len(rows) == 1 and rows[0]["val_dice"]  # validated once, at the stop
    assert float(rows[0]["val_dice"]) == pytest.approx(summary["best_val_dice"])
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 0
    assert load_checkpoint(tmp_path / "last.pt")["step"] == summary["steps"]
    assert (tmp_path / "curves.png").is_file()
    assert_no_leftovers(tmp_path)


def test_split_is_deterministic_and_disjoint():
    cases = list(range(10))
    a = split_cases(cases, 0.2, seed=1)
    assert a == split_cases(cases, 0.2, seed=1)
    assert len(a[1]) == 2 and not set(a[0]) & set(a[1])


def test_config_yaml_round_trip_and_errors(tmp_path):
    cfg = TrainConfig(data="x", roi_size=[64, 64, 64])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(path, max_epochs=3).max_epochs == 3
    path.write_text("data: x\nroi_sise: [1, 2, 3]\n")
    with pytest.raises(LungsegError, match="roi_sise"):
        TrainConfig.from_yaml(path)


def test_partial_network_and_preprocessing_keep_reference_defaults():
    cfg = TrainConfig(data="x", network={"channels": [8, 16, 32, 64, 128]}, preprocessing={"spacing": [3, 3, 3]})
    assert cfg.network.num_res_units == 2 and cfg.network.out_channels == 2
    assert tuple(cfg.preprocessing.hu_window) == (-1000.0, 1000.0)


@pytest.mark.parametrize("yaml_text, key", [
    ("data: d\npreprocessing: {spacnig: [2, 2, 2]}\n", "preprocessing.spacnig"),
    ("data: d\nnetwork: {chanels: [8, 16]}\n", "network.chanels"),
    ("data: d\nloss: dcie\n", "loss"),
    ("data: d\nlr_schedule: cosin\n", "lr_schedule"),
    ("data: d\ndevice: gpu\n", "device"),
    ("data: d\nrecipe: fastest\n", "recipe"),
    ("- data\n- d\n", "mapping"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys, yaml_text, key):
    from lungseg.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    assert main(["train", "--config", str(cfg)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and str(cfg) in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_recipes_fill_only_what_is_not_given():
    from lungseg.training.recipes import RECIPES

    cfg = TrainConfig(data="d", recipe="cpu-fast", lr=5e-4)
    assert cfg.lr == 5e-4 and cfg.loss == RECIPES["cpu-fast"]["loss"] == "dicece"
    assert list(cfg.preprocessing.spacing) == RECIPES["cpu-fast"]["preprocessing"]["spacing"]
    tutorial = TrainConfig(data="d")  # the defaults are the tutorial recipe
    assert (tutorial.loss, tutorial.lr, list(tutorial.preprocessing.spacing)) == ("dice", 1e-4, [1.5, 1.5, 2.0])


@pytest.mark.slow
def test_cpu_bf16_trains_in_bfloat16_and_keeps_float32_weights(phantom_data, tmp_path, monkeypatch):
    import torch

    from lungseg.training import loop

    seen = []
    build = loop.build_unet

    def recording_unet(*args, **kwargs):
        net = build(*args, **kwargs)
        net.register_forward_hook(lambda mod, inp, out: seen.append((mod.training, out.dtype)))
        return net

    monkeypatch.setattr(loop, "build_unet", recording_unet)
    summary = train(data=str(phantom_data), out=str(tmp_path), max_epochs=8, val_every=8,
                    cpu_bf16=True, device="cpu", **TINY)
    rows = _rows(tmp_path)
    losses = [float(r["train_loss"]) for r in rows]
    assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2])  # it learns
    train_dtypes = {d for t, d in seen if t}
    assert train_dtypes == {torch.bfloat16}  # every training forward ran in bfloat16
    assert {d for t, d in seen if not t} == {torch.bfloat16}  # and the validation's
    state = load_checkpoint(tmp_path / "last.pt")["state_dict"]
    assert {v.dtype for k, v in state.items() if v.is_floating_point()} == {torch.float32}
    assert summary["best_val_dice"] > 0.3

"""Training: the loss falls, the run folder holds what the README promises, resume works."""

import csv
import json

import numpy as np
import pytest
import yaml
from conftest import TINY

from lungseg.core.errors import LungsegError
from lungseg.networks import load_checkpoint
from lungseg.training.config import TrainConfig
from lungseg.training.loop import split_cases, train


def test_few_steps_lower_the_loss(phantom_data, tmp_path):
    summary = train(data=str(phantom_data), out=str(tmp_path), max_epochs=8, val_every=4, **TINY)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml", "split.json"):
        assert (tmp_path / name).is_file(), name
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["roi_size"] == TINY["roi_size"] and cfg["max_epochs"] == 8
    assert 0.0 <= summary["best_val_dice"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["settings"]["preprocessing"]["spacing"] == TINY["preprocessing"]["spacing"]


def test_resume_continues_from_last_epoch(phantom_data, tmp_path):
    train(data=str(phantom_data), out=str(tmp_path), max_epochs=2, val_every=2, **TINY)
    train(data=str(phantom_data), out=str(tmp_path), max_epochs=3, val_every=2, resume=True, **TINY)
    epochs = [int(r["epoch"]) for r in csv.DictReader((tmp_path / "metrics.csv").open())]
    assert epochs == [0, 1, 2]
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 3


def test_max_minutes_bounds_the_run(phantom_data, tmp_path):
    summary = train(data=str(phantom_data), out=str(tmp_path), max_epochs=500, max_minutes=0.05,
                    val_every=100, **TINY)
    assert summary["epochs"] < 500
    assert (tmp_path / "best.pt").is_file()  # validated once at the stop


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

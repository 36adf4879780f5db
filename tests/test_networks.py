"""Checkpoints: round trip, settings travel with weights, pickled code is refused."""

import pickle

import pytest
import torch
from conftest import assert_no_leftovers

from lungseg.core.errors import InputError
from lungseg.networks import build_unet, load_checkpoint, load_model, save_checkpoint

SMALL = {"channels": [4, 8, 16, 32, 64]}


def test_default_network_is_reference_recipe():
    net = build_unet()
    n_params = sum(p.numel() for p in net.parameters())
    # MONAI UNet 16-32-64-128-256, 2 residual units, batch norm, 3 output classes
    assert 4.7e6 < n_params < 4.9e6
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())


def test_checkpoint_round_trip_keeps_outputs(tmp_path):
    net = build_unet(SMALL).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    path = save_checkpoint(tmp_path / "m.pt", net, {"network": {**SMALL}, "preprocessing": {"spacing": [2, 2, 2]}})
    model, settings = load_model(path)
    assert settings["preprocessing"]["spacing"] == [2, 2, 2]
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-6)
    assert_no_leftovers(tmp_path)


def test_half_precision_checkpoint_is_smaller_and_close(tmp_path):
    net = build_unet(SMALL).eval()
    full = save_checkpoint(tmp_path / "f.pt", net, {"network": SMALL})
    half = save_checkpoint(tmp_path / "h.pt", net, {"network": SMALL}, half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    model, _ = load_model(half)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-2)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": "lungseg-checkpoint-v1", "x": _Evil()}, f)
    with pytest.raises(InputError, match="not a loadable"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a lungseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

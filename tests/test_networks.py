"""Checkpoints: round trip, settings travel with weights, pickled code is refused."""

import pickle

import pytest
import torch
from conftest import assert_no_leftovers

from lungseg.core.errors import InputError
from lungseg.networks import (
    average_weights,
    build_unet,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

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


def test_average_weights_is_the_elementwise_mean_of_runs(tmp_path):
    settings = {"network": SMALL, "preprocessing": {"spacing": [2, 2, 2]}}
    torch.manual_seed(0)
    nets = [build_unet(SMALL) for _ in range(3)]
    for net in nets:  # batch-norm statistics differ between runs too
        net.train()(torch.randn(2, 1, 32, 32, 32))
    paths = [save_checkpoint(tmp_path / f"run{i}.pt", net, settings) for i, net in enumerate(nets)]
    soup, got = average_weights(paths)
    assert got["preprocessing"]["spacing"] == [2, 2, 2]
    assert not soup.training
    states = [net.state_dict() for net in nets]
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (states[0][key] + states[1][key] + states[2][key]) / 3, atol=1e-6), key
        else:
            assert torch.equal(value, states[0][key]), key
    assert not torch.allclose(soup.state_dict()["model.0.conv.unit0.conv.weight"],
                              states[0]["model.0.conv.unit0.conv.weight"])
    one, _ = average_weights(paths[:1])  # a soup of one run is that run
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(one(x), nets[0].eval()(x), atol=1e-5)


def test_average_weights_refuses_runs_of_different_networks(tmp_path):
    a = save_checkpoint(tmp_path / "a.pt", build_unet(SMALL), {"network": SMALL})
    b = save_checkpoint(tmp_path / "b.pt", build_unet(SMALL), {"network": SMALL, "preprocessing": {"spacing": [1, 1, 1]}})
    with pytest.raises(InputError, match="b.pt.*preprocessing"):
        average_weights([a, b])


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

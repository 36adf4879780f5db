"""torchrun support: sharding gives every rank the same number of cases."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY, TINY_EPOCHS, assert_no_leftovers

from lungseg.networks import load_checkpoint
from lungseg.training.distributed import DistInfo, shard


def test_shards_are_equal_and_cover_everything():
    items = list(range(5))
    parts = [shard(items, DistInfo(rank=r, world_size=2)) for r in range(2)]
    assert [len(p) for p in parts] == [3, 3]
    assert set(parts[0]) | set(parts[1]) == set(items)
    assert shard(items, DistInfo()) == items


@pytest.mark.slow
def test_torchrun_two_cpu_processes(phantom_data, tiny_run, tmp_path):
    """Two gloo processes resume the session's run for one epoch together; rank 0 writes the files."""
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    before = (run / "metrics.csv").read_text().splitlines()
    saved_step = load_checkpoint(run / "last.pt")["step"]
    cfg = {**TINY, "data": str(phantom_data), "out": str(run), "max_epochs": TINY_EPOCHS + 1,
           "val_every": 10, "device": "cpu", "resume": True}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "lungseg.cli", "train", "--config", str(tmp_path / "cfg.yaml")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[:-1] == before  # one row appended, once (rank 0 only)
    new = rows[-1].split(",")
    assert int(new[0]) == TINY_EPOCHS and float(new[3]) > 0.5  # the last epoch validates
    # each rank steps on its shard of the training cases: DDP keeps the step count per rank
    n_train = len(json.loads((run / "split.json").read_text())["train"])
    shard_len = len(shard(list(range(n_train)), DistInfo(rank=0, world_size=2)))
    steps = shard_len * TINY["num_samples"] // TINY["batch_size"]
    assert load_checkpoint(run / "last.pt")["step"] == saved_step + steps
    assert_no_leftovers(run)

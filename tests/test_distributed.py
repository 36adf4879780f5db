"""torchrun support: sharding gives every rank the same number of cases."""

from lungseg.training.distributed import DistInfo, shard


def test_shards_are_equal_and_cover_everything():
    items = list(range(5))
    parts = [shard(items, DistInfo(rank=r, world_size=2)) for r in range(2)]
    assert [len(p) for p in parts] == [3, 3]
    assert set(parts[0]) | set(parts[1]) == set(items)
    assert shard(items, DistInfo()) == items


def test_torchrun_two_cpu_processes(phantom_data, tmp_path):
    """Two gloo processes train one epoch together; rank 0 writes the run folder."""
    import os
    import subprocess
    import sys

    import yaml
    from conftest import TINY

    cfg = {**TINY, "data": str(phantom_data), "out": str(tmp_path / "run"), "max_epochs": 2,
           "val_every": 2, "device": "cpu"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "lungseg.cli", "train", "--config", str(tmp_path / "cfg.yaml")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once (rank 0 only)
    assert (tmp_path / "run" / "best.pt").is_file()

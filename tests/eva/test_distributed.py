"""Data-parallel pretraining under torchrun: 2 processes, gloo on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed


def _torchrun(args, tmp_path, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPROZOO_QUIET": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_pretraining_keeps_ranks_in_sync(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = _torchrun([str(worker), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == 2
    assert r0["history"] == r1["history"] and len(r0["history"]) == 2  # losses all-reduced over ranks
    for k, v in r0["state"].items():  # gradients all-reduced: identical weights on both ranks
        torch.testing.assert_close(v, r1["state"][k], msg=k)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)  # written by rank 0 only
    assert ckpt["epoch"] == 2


def test_torchrun_cli_pretrain_then_finetune(tmp_path):
    out = tmp_path / "run"
    common = ["--out", str(out), "--epochs", "1", "--batch-size", "16"]
    proc = _torchrun(["-m", "reprozoo.eva.train", "pretrain", *common, "--n-train", "64"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "student_mim.pt").is_file() and (out / "teacher.pt").is_file()
    assert "pretrain loss" in proc.stdout
    proc = _torchrun(["-m", "reprozoo.eva.train", "finetune", *common, "--labels", "64", "--n-test", "200"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finetune top1" in proc.stdout

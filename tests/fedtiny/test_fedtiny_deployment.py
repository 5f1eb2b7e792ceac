"""A real Flower deployment on loopback, as the Flower docs describe it: a SuperLink, two SuperNodes (each
with its own ``--node-config "partition-id=K num-partitions=2"``) and ``flwr run`` of the fedtiny app,
started and stopped here.  The ServerApp evaluates on the clients (``evaluate-on='clients'``: the path of
a server that holds no data)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import reprozoo.fedtiny as pkg  # noqa: E402

BIN = Path(sys.executable).parent
APP = Path(pkg.__file__).parent / "flwr_app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def _stop(procs: list[subprocess.Popen], port: int) -> None:
    """SIGTERM to each started process group, SIGKILL after 20 s; then the detached helpers these started
    (``flower-superexec`` with our SuperLink's or SuperNodes' port on its command line), by pid."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    ports = {f"127.0.0.1:{q}" for q in (port, port + 1, port + 2)}
    for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any("flower-superexec" in c for c in cmd) and ports & set(cmd):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "flower-superlink").exists() or not shutil.which("flwr", path=str(BIN)),
                    reason="flower-superlink / flwr not installed next to this Python")
def test_flwr_run_on_a_superlink_with_two_supernodes(tmp_path):
    port = _free_port()
    home = tmp_path / "flwr_home"
    home.mkdir()
    # a named connection to our SuperLink (flwr run APP loopback)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    src = str(Path(pkg.__file__).parents[2])
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("superlink", "node0", "node1")}  # noqa: SIM115
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"],
            env=env, cwd=tmp_path, stdout=logs["superlink"], stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_port(port, procs[0])
        for k in (0, 1):
            procs.append(subprocess.Popen(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                 "--port", str(port + 1 + k), "--node-config", f"partition-id={k} num-partitions=2"],
                env=env, cwd=tmp_path, stdout=logs[f"node{k}"], stderr=subprocess.STDOUT, start_new_session=True))
        run_config = "preset='smoke' methods='FedTiny' device='cpu' n-clients='2' evaluate-on='clients'"
        done = subprocess.run([str(BIN / "flwr"), "run", str(APP), "loopback", "--stream", "--run-config", run_config],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540)
    finally:
        _stop(procs, port)
        for f in logs.values():
            f.close()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    # the ServerApp ran ABNS (a warm-up round, both queries) and the rounds on the two SuperNodes and logged
    # the run's numbers, evaluated on the clients' test shards; no client failed
    assert "fedtiny MNIST d=0.05 seed=0 FedTiny: top1=" in out and "failures=[]" in out, out[-4000:]
    assert "density=0.0500" in out
    assert "Traceback" not in out

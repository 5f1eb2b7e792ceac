"""Interrupting a Flower-engine run (Ctrl-C / SIGTERM): the ServerApp thread stops, Ray is shut down, the
caller's signal handlers come back and the CLI exits 130 / 143 without a partial folder or a hang."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reprozoo.fedtiny.simulation import SimulationStopped, _StoppableGrid, run_federated


class _SilentGrid:
    """Accepts messages and never replies (a client that hangs)."""

    def push_messages(self, messages):
        return [str(i) for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        return []


def test_stoppable_grid_stops_waiting_for_replies_once_stop_is_set():
    stop = threading.Event()
    grid = _StoppableGrid(_SilentGrid(), stop, poll=0.02)
    assert list(grid.send_and_receive([object()], timeout=0.1)) == []  # no stop: the timeout still applies
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(SimulationStopped):
        grid.send_and_receive([object(), object()], timeout=600)
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(SimulationStopped):  # every later grid call fails fast too
        grid.push_messages([object()])


def test_flower_engine_gives_back_the_callers_signal_handlers():
    """Ray's init replaces SIGTERM's handler (a sys.exit handler, and an aborting one in C); after a run
    the caller's handlers are in place again and Ray is shut down."""
    import ray

    def caller_handler(signum, frame):  # pragma: no cover - never called
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, caller_handler)
    try:
        before_int = signal.getsignal(signal.SIGINT)
        def nodes_job(grid):  # the nodes register shortly after the ServerApp starts
            deadline = time.monotonic() + 60
            while len(list(grid.get_node_ids())) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            return sorted(grid.get_node_ids())

        (nodes,), _ = run_federated([nodes_job], 2, engine="flower", num_cpus=1)
        assert len(nodes) == 2
        assert signal.getsignal(signal.SIGTERM) is caller_handler
        assert signal.getsignal(signal.SIGINT) is before_int
        assert not ray.is_initialized()
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # blocked only during init
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_flower_run_interrupted_exits_cleanly(tmp_path: Path, sig, code):
    """The signal goes to the whole process group (as Ctrl-C or ``timeout`` send it, Ray's processes
    included) once the run is under way; the CLI must end within a minute with 128+signum, leaving neither
    the run folder nor its hidden partial folder."""
    out = tmp_path / "a"
    cli = Path(sys.executable).with_name("reprozoo")
    cmd = [str(cli), "run", "fedtiny", "--preset", "smoke", "--set", "engine=flower", "--set", "num_cpus=1",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".a.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(8.0)  # into Ray's start-up or the federated rounds
        assert proc.poll() is None, "the run ended before it could be interrupted"
        t0 = time.monotonic()
        os.killpg(proc.pid, sig)
        output, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    text = output.decode(errors="replace")
    assert proc.returncode == code, text[-3000:]
    assert elapsed < 60
    assert not out.exists()
    assert not list(tmp_path.glob(".a.partial-*")), text[-3000:]
    assert "AbslFailureSignalHandler" not in text and "Traceback" not in text, text[-3000:]

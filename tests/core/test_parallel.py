"""map_jobs: results in item order, the same in processes as here, errors re-raised, arguments checked."""

import os

import pytest

from reprozoo.core.parallel import map_jobs


def _square_and_threads(x: int) -> tuple[int, int, str, bool, bool]:
    import signal

    import torch

    from reprozoo.core.progress import _QUIET

    ignores_ctrl_c = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    return x * x, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", ""), _QUIET, ignores_ctrl_c


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError(f"job {x} failed")
    return x


def test_in_process_keeps_order():
    assert [r[0] for r in map_jobs(_square_and_threads, [3, 1, 2])] == [9, 1, 4]


def test_processes_keep_item_order_and_set_threads():
    out = map_jobs(_square_and_threads, [3, 1, 2, 5], workers=2, first=lambda x: -x)
    assert [r[0] for r in out] == [9, 1, 4, 25]  # item order, though handed out largest first
    assert {r[1:] for r in out} == {(1, "1", True, True)}  # each worker single-threaded, quiet, ignoring Ctrl-C


def test_process_error_is_reraised():
    with pytest.raises(ValueError, match="job 2 failed"):
        map_jobs(_fail_on_two, [1, 2, 3], workers=2)


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"threads": 0}, {"workers": 1.5}])
def test_bad_arguments_named(kwargs):
    with pytest.raises((ValueError, TypeError), match="workers|threads"):
        map_jobs(_square_and_threads, [1], **kwargs)


def _die(x: int) -> int:
    if x == 1:
        os.kill(os.getpid(), 9)  # as the out-of-memory killer would
    return x


def test_a_killed_worker_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="ended without a result"):
        map_jobs(_die, [0, 1, 2], workers=2)


def test_a_script_without_a_main_guard_fails_with_advice(tmp_path):
    """spawn re-imports the calling script; without the guard each worker fails as it starts (the pool used to
    replace them forever)."""
    import subprocess
    import sys

    script = tmp_path / "noguard.py"
    script.write_text("from reprozoo.core.parallel import map_jobs\nprint(map_jobs(abs, [-1, -2, -3], workers=2))\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "__main__" in res.stderr and "ended without a result" in res.stderr

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

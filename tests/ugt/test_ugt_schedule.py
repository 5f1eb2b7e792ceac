"""Sparsity schedules."""

import pytest

from reprozoo.ugt import ConstantSparsitySchedule, LinearSparsitySchedule, PolynomialSparsitySchedule, make_schedule


def test_linear_ramp_follows_reference_formula():
    e, s_f = 400, 0.9
    sched = LinearSparsitySchedule(s_f, e)
    for t in range(e):
        expected = s_f * t / (e / 2) if t < e / 2 else s_f  # reference get_sparsity
        assert sched(t) == pytest.approx(expected)
    assert sched(0) == 0.0


def test_polynomial_and_constant():
    p = PolynomialSparsitySchedule(0.8, 100)
    assert p(0) == 0.0 and p(50) == pytest.approx(0.8) and p(99) == pytest.approx(0.8)
    assert p(25) == pytest.approx(0.8 * (1 - 0.5**3))
    assert all(ConstantSparsitySchedule(0.7, 10)(t) == 0.7 for t in range(10))
    assert isinstance(make_schedule("linear", 0.5, 10), LinearSparsitySchedule)
    assert "final=0.5" in repr(make_schedule("polynomial", 0.5, 10))


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="final"):
        LinearSparsitySchedule(1.0, 10)
    with pytest.raises(ValueError, match="total_epochs"):
        LinearSparsitySchedule(0.5, 0)
    with pytest.raises(ValueError, match="epoch"):
        LinearSparsitySchedule(0.5, 10)(-1)
    with pytest.raises(ValueError, match="kind"):
        make_schedule("cosine", 0.5, 10)
    with pytest.raises(TypeError, match="final"):
        LinearSparsitySchedule("0.5", 10)

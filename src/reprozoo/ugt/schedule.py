"""Sparsity schedules: the target sparsity ``s_t`` used for the masks at training epoch ``t``.

UGT raises the sparsity gradually from dense to the final value (paper Sec. 3.2, "gradual
sparsification"). The reference code (``get_sparsity`` in ``models/supervised_learning.py``)
ramps **linearly** over the first half of training; the paper's text may describe a polynomial
(cubic, Zhu & Gupta 2017) ramp, offered here as an option. Evaluation always uses ``s_final``.
"""

from __future__ import annotations

from reprozoo.core.checks import check_float, check_int

__all__ = ["LinearSparsitySchedule", "PolynomialSparsitySchedule", "ConstantSparsitySchedule", "make_schedule"]


class _Schedule:
    def __init__(self, final: float, total_epochs: int, ramp_fraction: float = 0.5) -> None:
        self.final = check_float(final, "final", low=0.0, high=1.0, high_inclusive=False)
        self.total_epochs = check_int(total_epochs, "total_epochs", low=1)
        self.ramp_fraction = check_float(ramp_fraction, "ramp_fraction", low=0.0, high=1.0, low_inclusive=False)

    @property
    def ramp_epochs(self) -> float:
        """Length of the ramp, ``ramp_fraction · total_epochs`` (E/2 in the reference)."""
        return self.ramp_fraction * self.total_epochs

    def _progress(self, epoch: int) -> float:
        epoch = check_int(epoch, "epoch", low=0)
        return min(epoch / self.ramp_epochs, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(final={self.final}, total_epochs={self.total_epochs}, " \
               f"ramp_fraction={self.ramp_fraction})"


class LinearSparsitySchedule(_Schedule):
    """``s_t = s_f · t / (r·E)`` for ``t < r·E``, then ``s_f`` (reference code; ``r = 1/2``).

    Parameters
    ----------
    final : float in [0, 1)
        Final sparsity ``s_f`` (fraction of weights removed).
    total_epochs : int >= 1
        ``E``.
    ramp_fraction : float in (0, 1], default 0.5
        Fraction of training spent ramping.

    Examples
    --------
    >>> sched = LinearSparsitySchedule(0.9, 400)
    >>> sched(0), sched(100), sched(200), sched(399)
    (0.0, 0.45, 0.9, 0.9)
    """

    def __call__(self, epoch: int) -> float:
        return self.final * self._progress(epoch)


class PolynomialSparsitySchedule(_Schedule):
    """``s_t = s_f · (1 − (1 − t/(r·E))^p)`` for ``t < r·E``, then ``s_f`` (Zhu & Gupta 2017; ``p = 3``).

    Examples
    --------
    >>> round(PolynomialSparsitySchedule(0.9, 400)(100), 4)
    0.7875
    """

    def __init__(self, final: float, total_epochs: int, ramp_fraction: float = 0.5, power: float = 3.0) -> None:
        super().__init__(final, total_epochs, ramp_fraction)
        self.power = check_float(power, "power", low=0.0, low_inclusive=False)

    def __call__(self, epoch: int) -> float:
        return self.final * (1.0 - (1.0 - self._progress(epoch)) ** self.power)


class ConstantSparsitySchedule(_Schedule):
    """``s_t = s_f`` at every epoch (Edge-Popup: no ramp)."""

    def __call__(self, epoch: int) -> float:
        check_int(epoch, "epoch", low=0)
        return self.final


def make_schedule(kind: str, final: float, total_epochs: int, ramp_fraction: float = 0.5) -> _Schedule:
    """Schedule by name: ``"linear"`` (reference), ``"polynomial"`` or ``"constant"``."""
    kinds = {"linear": LinearSparsitySchedule, "polynomial": PolynomialSparsitySchedule,
             "constant": ConstantSparsitySchedule}
    if kind not in kinds:
        raise ValueError(f"kind={kind!r} is not a known schedule; choose one of {list(kinds)}")
    return kinds[kind](final, total_epochs, ramp_fraction)

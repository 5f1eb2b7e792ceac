"""BEiT block-wise masking (Bao et al., ICLR 2022, Algorithm 1), as EVA uses it (Sec. 2.2: 40 % of the patches).

Blocks are drawn one after another until ``num_masked`` patches are masked: area s ~ U(min_block, remaining),
aspect ratio r ~ log-U(aspect), h = round(sqrt(s r)), w = round(sqrt(s / r)), a random position; a block is kept
when it adds between 1 and ``remaining`` new patches. The authors' ``masking_generator.py`` gives up after ten
failed draws and may return fewer patches; here the draws go on (up to ``max_attempts``) and, if they still fail,
the mask grows by the unmasked neighbours of masked patches, so the count is exact and every connected masked
region keeps at least ``min_block`` patches. Each kept block also has h·w >= ``min_block`` and h / w in
``aspect`` after rounding (the authors' loop checks them before rounding).

Cost: O(num_masked) draws of O(h w) each per mask, on the host (as in the authors' data loader).
"""

from __future__ import annotations

import math

import numpy as np

from reprozoo.core.checks import check_int

__all__ = ["BlockMaskGenerator"]


class BlockMaskGenerator:
    """Seeded BEiT block masks on a ``grid`` of patches.

    Parameters
    ----------
    grid : int or (int, int)
        Patch grid (height, width), e.g. 16 for EVA's 224 px / 14 px patches, 8 for 32 px / 4 px.
    num_masked : int
        Patches masked per image (EVA: 105 of 256, about 40 %).
    min_block : int
        Fewest patches in a block (EVA/BEiT: 16; 4 here on the 8x8 grid).
    aspect : (float, float)
        Range of a block's aspect ratio h / w (0.3, 1 / 0.3).
    seed : int
        Seed of the generator's own ``numpy.random.Generator``.
    max_attempts : int
        Draws per block before growing the mask to the exact count.

    Attributes
    ----------
    last_blocks : list of (top, left, h, w)
        The blocks drawn for the most recent mask.

    Examples
    --------
    >>> gen = BlockMaskGenerator(8, num_masked=26, min_block=4, seed=0)
    >>> m = gen()
    >>> m.shape, int(m.sum())
    ((8, 8), 26)
    >>> gen.batch(3).shape
    (3, 64)
    """

    def __init__(self, grid: int | tuple[int, int], num_masked: int, min_block: int = 16,
                 aspect: tuple[float, float] = (0.3, 1 / 0.3), seed: int = 0, max_attempts: int = 100):
        h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.height, self.width = check_int(h, "grid", low=1), check_int(w, "grid", low=1)
        self.num_patches = self.height * self.width
        self.num_masked = check_int(num_masked, "num_masked", low=1, high=self.num_patches - 1)
        self.min_block = check_int(min_block, "min_block", low=1, high=self.num_masked)
        lo, hi = aspect
        if not 0 < lo <= hi:
            raise ValueError(f"aspect={aspect!r} should be (low, high) with 0 < low <= high")
        self.aspect = (float(lo), float(hi))
        self.log_aspect = (math.log(lo), math.log(hi))
        self.max_attempts = check_int(max_attempts, "max_attempts", low=1)
        self.rng = np.random.default_rng(seed)
        self.last_blocks: list[tuple[int, int, int, int]] = []

    def __repr__(self) -> str:
        return (f"BlockMaskGenerator(grid=({self.height}, {self.width}), num_masked={self.num_masked}, "
                f"min_block={self.min_block}, aspect=({self.aspect[0]:.3g}, {self.aspect[1]:.3g}))")

    def _block(self, mask: np.ndarray, remaining: int) -> int:
        """Draw blocks until one adds 1..remaining new patches; return how many it added (0 if none did)."""
        lo, hi = self.log_aspect
        for _ in range(self.max_attempts):
            area = self.rng.uniform(self.min_block, max(remaining, self.min_block))
            ratio = math.exp(self.rng.uniform(lo, hi))
            h, w = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if not (0 < h <= self.height and 0 < w <= self.width and h * w >= self.min_block
                    and self.aspect[0] <= h / w <= self.aspect[1]):
                continue
            top = int(self.rng.integers(0, self.height - h + 1))
            left = int(self.rng.integers(0, self.width - w + 1))
            new = h * w - int(mask[top:top + h, left:left + w].sum())
            if 0 < new <= remaining:
                mask[top:top + h, left:left + w] = True
                self.last_blocks.append((top, left, h, w))
                return new
        return 0

    def _grow(self, mask: np.ndarray, remaining: int) -> None:
        """Mask ``remaining`` more patches among the unmasked 4-neighbours of masked ones."""
        while remaining > 0:
            near = np.zeros_like(mask)
            near[1:] |= mask[:-1]
            near[:-1] |= mask[1:]
            near[:, 1:] |= mask[:, :-1]
            near[:, :-1] |= mask[:, 1:]
            cand = np.flatnonzero(near & ~mask)
            if cand.size == 0:  # nothing masked yet
                cand = np.flatnonzero(~mask)
            pick = self.rng.choice(cand, size=min(remaining, cand.size), replace=False)
            mask.flat[pick] = True
            remaining -= pick.size

    def __call__(self) -> np.ndarray:
        """One (height, width) bool mask with exactly ``num_masked`` True entries."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        self.last_blocks = []
        count = 0
        while count < self.num_masked:
            added = self._block(mask, self.num_masked - count)
            if added == 0:
                self._grow(mask, self.num_masked - count)
                break
            count += added
        return mask

    def batch(self, n: int) -> np.ndarray:
        """``n`` masks flattened to (n, height · width) bool, row-major like the patch tokens."""
        n = check_int(n, "n", low=1)
        return np.stack([self().reshape(-1) for _ in range(n)])

"""The statistics `attnbench compare` and `attnbench ci` share: the ratio of medians new / base with a
percentile-bootstrap confidence interval (``median_ratio_ci``, seeded per case by ``case_seed``), the
verdict it implies against a threshold (``time_verdict``), and the threshold's check and defaults.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from harness.core.errors import InputError

DEFAULT_THRESHOLD = 1.10


DEFAULT_CONFIDENCE = 0.95


N_BOOTSTRAP = 2000


# ---- statistics -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RatioCI:
    """new / base ratio of medians and its confidence interval (lo, hi); NaN bounds when undefined."""

    ratio: float
    lo: float
    hi: float
    n_base: int
    n_new: int

    def scaled(self, factor: float) -> "RatioCI":
        return RatioCI(self.ratio / factor, self.lo / factor, self.hi / factor, self.n_base, self.n_new)


def case_seed(key: str, seed: int = 0) -> int:
    """A stable per-case seed (crc32 of the key), so a case's interval does not depend on case order."""
    return zlib.crc32(key.encode("utf-8")) ^ seed


def median_ratio_ci(base, new, confidence: float = DEFAULT_CONFIDENCE, n_boot: int = N_BOOTSTRAP,
                    seed: int = 0) -> RatioCI:
    """Ratio of medians median(new) / median(base) with a percentile-bootstrap confidence interval.

    ``base`` and ``new`` are positive samples (seconds, or calibration-normalized times). Each side is
    resampled with replacement independently, ``n_boot`` times, with ``numpy.random.default_rng(seed)``.
    With fewer than 2 samples on a side the interval is undefined (NaN bounds): no confident verdict.
    """
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    if b.size == 0 or n.size == 0:
        raise ValueError("median_ratio_ci needs at least one sample on each side")
    if (b <= 0).any() or (n <= 0).any() or not (np.isfinite(b).all() and np.isfinite(n).all()):
        raise ValueError("median_ratio_ci needs positive, finite samples")
    ratio = float(np.median(n) / np.median(b))
    if b.size < 2 or n.size < 2:
        return RatioCI(ratio, math.nan, math.nan, int(b.size), int(n.size))
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mn = np.median(n[rng.integers(0, n.size, size=(n_boot, n.size))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(mn / mb, [alpha, 1.0 - alpha])
    return RatioCI(ratio, float(lo), float(hi), int(b.size), int(n.size))


def paired_ratio_ci(base, new, confidence: float = DEFAULT_CONFIDENCE, n_boot: int = N_BOOTSTRAP,
                    seed: int = 0) -> RatioCI:
    """Ratio new / base from paired values: exp of the median of the per-pair log ratios
    log(new_i / base_i), with a percentile bootstrap over pairs (``n_boot`` resamples of whole pairs,
    ``numpy.random.default_rng(seed)``). What the two sides of a pair share (the load while they ran,
    side by side) cancels in each pair's ratio; the median keeps one disturbed pair from moving the
    figure. With fewer than 2 pairs the interval is undefined (NaN bounds): no confident verdict.
    """
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    if b.size == 0 or b.shape != n.shape:
        raise ValueError("paired_ratio_ci needs one value per side for each pair, at least one pair")
    if (b <= 0).any() or (n <= 0).any() or not (np.isfinite(b).all() and np.isfinite(n).all()):
        raise ValueError("paired_ratio_ci needs positive, finite values")
    d = np.log(n) - np.log(b)
    ratio = float(np.exp(np.median(d)))
    if d.size < 2:
        return RatioCI(ratio, math.nan, math.nan, int(b.size), int(n.size))
    rng = np.random.default_rng(seed)
    boot = np.median(d[rng.integers(0, d.size, size=(n_boot, d.size))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.exp(np.quantile(boot, [alpha, 1.0 - alpha]))
    return RatioCI(ratio, float(lo), float(hi), int(b.size), int(n.size))


def time_verdict(ci: RatioCI, threshold: float) -> str:
    """slower / faster only with confidence (the whole interval beyond the threshold), else same."""
    if math.isnan(ci.lo) or math.isnan(ci.hi):
        return "same"
    if ci.lo > threshold:
        return "slower"
    if ci.hi < 1.0 / threshold:
        return "faster"
    return "same"


def check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 1.0):
        raise InputError(f"threshold must be a ratio above 1, got {threshold!r}; hint: --threshold 1.10 flags "
                         "cases more than 10% slower")

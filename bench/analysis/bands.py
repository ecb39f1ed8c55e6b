"""Confidence bands clipped to what an axis can draw.

Every quantity the notebooks plot with a 95 % CI — a latency, a rate, a count, a share —
is never negative, yet ``mean − half width`` is whenever the spread over a few
replications is wide (quick mode: two replications, so Student's t with one degree of
freedom, 12.7 × the standard error). Drawn as is, such a band dips below zero on a linear
axis, and on a log axis, where 0 and below do not exist, matplotlib stretches it down to
the bottom of the figure. :func:`clip_band` gives the edges to draw instead:

* linear axis: the lower edge is at least 0;
* log axis: the lower edge is at least ``floor`` — the axis' lower limit when the caller
  knows it, else :data:`LOG_FLOOR_SHARE` of the mean at that point (the band then ends
  1.3 decades under its line: "reaches towards zero"); never above the mean itself;
  where the mean is ≤ 0 the point is not on a log axis at all, and both edges are NaN.

The upper edge is ``mean + half width``. A NaN half width (one replication: no spread
known) is a band of zero width. :func:`clip_yerr` is the same as error-bar lengths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

LOG_FLOOR_SHARE = 0.05
"""On a log axis without a given floor, a band's lower edge stops at this share of the mean."""

Floats = NDArray[np.float64]


def clip_band(
    mean: Any, half_width: Any, *, log: bool = False, floor: float | None = None
) -> tuple[Floats, Floats]:
    """The lower and upper edges of ``mean ± half_width`` clipped to the axis (see the
    module docstring). ``mean`` and ``half_width`` are array-likes of one length (a pandas
    Series works); ``floor`` (log axes only) must be > 0. Raises ``ValueError`` for a
    negative half width, a length mismatch, or a floor ≤ 0."""
    m = np.asarray(mean, dtype=float)
    h = np.nan_to_num(np.asarray(half_width, dtype=float), nan=0.0)
    if m.shape != h.shape:
        raise ValueError(f"clip_band: mean has shape {m.shape}, half_width {h.shape}")
    if (h < 0).any():
        raise ValueError(f"clip_band: half_width must be ≥ 0, got min {h.min():g}")
    low, high = m - h, m + h
    if not log:
        if floor is not None:
            raise ValueError("clip_band: floor is for a log axis (log=True)")
        return np.maximum(low, 0.0), high
    if floor is not None and not floor > 0:
        raise ValueError(f"clip_band: a log axis' floor must be > 0, got {floor!r}")
    least = m * LOG_FLOOR_SHARE if floor is None else np.full_like(m, floor)
    low = np.minimum(np.maximum(low, least), m)
    drawable = m > 0
    return np.where(drawable, low, np.nan), np.where(drawable, high, np.nan)


def clip_yerr(
    mean: Any, half_width: Any, *, log: bool = False, floor: float | None = None
) -> Floats:
    """:func:`clip_band` as matplotlib's asymmetric ``yerr`` (shape ``(2, n)``: lengths
    below and above the mean); a point a log axis cannot show gets no bar (0, 0)."""
    m = np.asarray(mean, dtype=float)
    low, high = clip_band(m, half_width, log=log, floor=floor)
    lengths: Floats = np.nan_to_num(np.vstack([m - low, high - m]), nan=0.0)
    return lengths

"""Sanity checks of camera images before a network sees them.

The network's input rule (non-finite charge → 0, negative → 0) would turn a broken image (all
charges NaN, all zero, −1e6, a 1e6 p.e. pixel, NaN peak times) into an ordinary-looking input
and a finite, confident prediction. These checks are on the image itself, not on its stored
parameters (which may have been computed before the image broke): an image fails when

- fewer than `MIN_FINITE_FRACTION` of its pixels have a finite charge and peak time,
- no pixel has a positive charge,
- a finite charge is outside `CHARGE_RANGE_PE`, or a finite peak time outside
  `PEAK_TIME_RANGE_NS`: far beyond what a camera records (pixels saturate at a few thousand
  p.e.; readout windows are tens to hundreds of ns).

The inference engine (`reco.engine`) writes images that fail as invalid and counts them.
"""
import numpy as np

__all__ = [
    "CHARGE_RANGE_PE",
    "CHECKS",
    "MIN_FINITE_FRACTION",
    "PEAK_TIME_RANGE_NS",
    "image_check_failures",
]

MIN_FINITE_FRACTION = 0.5
CHARGE_RANGE_PE = (-1e3, 1e5)
PEAK_TIME_RANGE_NS = (-1e3, 1e3)

#: the checks by name, in the order they are counted
CHECKS = (
    "too few finite pixels",
    "no positive charge",
    f"charge outside [{CHARGE_RANGE_PE[0]:g}, {CHARGE_RANGE_PE[1]:g}] p.e.",
    f"peak time outside [{PEAK_TIME_RANGE_NS[0]:g}, {PEAK_TIME_RANGE_NS[1]:g}] ns",
)


def _outside(values, bounds):
    with np.errstate(invalid="ignore"):
        return np.any((values < bounds[0]) | (values > bounds[1]), axis=1)


def image_check_failures(image, peak_time):
    """Which images ``(n, n_pixels)`` fail which check: ``{check name: bool array (n,)}``.

    An image passes when it fails none; NaN pixels are ignored by the range checks (they count
    against the finite fraction).
    """
    image = np.asarray(image, dtype=np.float64)
    peak_time = np.asarray(peak_time, dtype=np.float64)
    finite = np.isfinite(image) & np.isfinite(peak_time)
    n_pixels = max(image.shape[1], 1)
    positive = np.any(np.where(finite, image, 0.0) > 0, axis=1)
    return dict(zip(CHECKS, (
        np.count_nonzero(finite, axis=1) < MIN_FINITE_FRACTION * n_pixels,
        ~positive,
        _outside(np.where(np.isfinite(image), image, 0.0), CHARGE_RANGE_PE),
        _outside(np.where(np.isfinite(peak_time), peak_time, 0.0), PEAK_TIME_RANGE_NS),
    )))

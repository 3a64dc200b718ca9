"""The error metrics, defined once: what ``validate``, ``bench`` and the parity tests report.

``max_rel`` is ``max |ours - ref| / max |ref|``: the error relative to the output's scale,
which stays meaningful where individual reference values are near zero. A non-finite value
in ``ours`` is an infinite error. ``top1_agreement`` is the fraction of argmaxes over axis 1
(classes) that agree: per image for logits, per pixel for segmentation maps.
"""

from __future__ import annotations

import numpy as np

#: floor of the relative error's denominator (an all-zero reference output)
TINY = 1e-30


def max_errors(ours, ref) -> tuple[float, float]:
    """``(max_abs, max_rel)`` of ``ours`` against ``ref`` (see the module docstring)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"cannot compare an output of shape {ours.shape} with a reference of shape {ref.shape}")
    if ours.size == 0:
        return 0.0, 0.0
    if not np.all(np.isfinite(ours)):
        return float("inf"), float("inf")
    max_abs = float(np.max(np.abs(ours - ref)))
    return max_abs, max_abs / max(float(np.max(np.abs(ref))), TINY)


def max_rel_error(ours, ref) -> float:
    return max_errors(ours, ref)[1]


def top1_agreement(ours, ref) -> float:
    """Fraction of argmax over axis 1 that agree (per image, or per pixel of a segmentation map)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    return float((ours.argmax(axis=1) == ref.argmax(axis=1)).mean())

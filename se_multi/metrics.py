"""The error metrics, defined once: what ``validate``, ``bench`` and the parity tests report.

``max_rel`` is ``max |ours - ref| / max |ref|``: the error relative to the output's scale,
which stays meaningful where individual reference values are near zero. A non-finite value
in ``ours`` is an infinite error. ``top1_agreement`` is the fraction of argmaxes over axis 1
(classes) that agree: per image for logits, per pixel for segmentation maps.

``relative_bias`` is the mean *signed* relative error, ``sum(sign(ref) * (ours - ref)) / sum(|ref|)``:
the mean of ``(ours - ref) / ref`` weighted by ``|ref|`` (so reference values near zero, where a
relative error means nothing, weigh nothing). An output scaled by ``1 + b`` has bias exactly ``b``;
honest round-to-nearest errors are as often up as down in magnitude and average out to ~0 over
many elements, so a bias that stays is a systematic error (a scale applied twice, an off-by-one
constant) that a max-error tolerance at a coarse dtype can hide. It does not see an additive offset
on values of both signs (that cancels); such an offset still shows in ``max_rel``.
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


def relative_bias(ours, ref) -> float:
    """The mean signed relative error of ``ours`` against ``ref`` (see the module docstring)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"cannot compare an output of shape {ours.shape} with a reference of shape {ref.shape}")
    scale = float(np.sum(np.abs(ref)))
    if ours.size == 0 or scale == 0.0:
        return 0.0
    if not np.all(np.isfinite(ours)):
        return float("inf")
    return float(np.sum(np.sign(ref) * (ours - ref)) / scale)


def top1_agreement(ours, ref) -> float:
    """Fraction of argmax over axis 1 that agree (per image, or per pixel of a segmentation map)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    return float((ours.argmax(axis=1) == ref.argmax(axis=1)).mean())

"""The error metrics, defined once: what ``validate``, ``bench`` and the parity tests report.

``max_rel`` is ``max |ours - ref| / max |ref|``: the error relative to the output's scale,
which stays meaningful where individual reference values are near zero. A non-finite value
in ``ours`` is an infinite error. ``top1_agreement`` is the fraction of argmaxes over axis 1
(classes) that agree: per image for logits, per pixel for segmentation maps.

``mean_rel`` is ``mean |ours - ref| / max |ref|``, the mean counterpart of ``max_rel``.
``topk_agreement`` is the fraction of images whose reference top-1 class is among ours' top k
(k=1 is ``top1_agreement`` for logits). ``mask_agreement`` is, for segmentation outputs
``(N, K, H, W)``, the fraction of pixels with the same class (the class map ``se-multi predict``
writes: the argmax over K, or ``logit > 0`` for one channel).

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


def mean_rel_error(ours, ref) -> float:
    """``mean |ours - ref| / max |ref|`` (see the module docstring)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"cannot compare an output of shape {ours.shape} with a reference of shape {ref.shape}")
    if ours.size == 0:
        return 0.0
    if not np.all(np.isfinite(ours)):
        return float("inf")
    return float(np.mean(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), TINY))


def topk_agreement(ours, ref, k: int) -> float:
    """The fraction of images (rows of ``(N, classes)`` logits) whose ``ref`` top-1 class is among
    ``ours``' top ``k``."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape or ours.ndim != 2:
        raise ValueError(f"topk_agreement compares (N, classes) outputs; got {ours.shape} and {ref.shape}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= ours.shape[1]:
        raise ValueError(f"k must be an int in 1..{ours.shape[1]}; got {k!r}")
    want = np.argmax(ref, axis=1)
    top = np.argsort(-ours, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == want[:, None], axis=1)))


def class_ids(output) -> np.ndarray:
    """``(..., K, H, W)`` segmentation logits -> ``(..., H, W)`` class ids: the argmax over K, or
    ``logit > 0`` for one channel (a binary map)."""
    output = np.asarray(output)
    if output.shape[-3] == 1:
        return (output[..., 0, :, :] > 0).astype(np.int64)
    return np.argmax(output, axis=-3)


def mask_agreement(ours, ref) -> float:
    """Segmentation: the fraction of pixels of ``(N, K, H, W)`` outputs with the same class (:func:`class_ids`)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape or ours.ndim != 4:
        raise ValueError(f"mask_agreement compares (N, K, H, W) outputs; got {ours.shape} and {ref.shape}")
    return float(np.mean(class_ids(ours) == class_ids(ref)))

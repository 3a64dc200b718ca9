"""Deterministic weights: the embedded default, so every command runs offline.

The recipe is the one the parity fixtures were made with (shared/fixtures/parity
README), so a model created with ``weights=None, seed=S`` holds exactly the
weights the peer had for a manifest with the same keys in the same order:

    u = Generator(PCG64([seed, i])).random(shape)         # tensor number i
    weight (ndim >= 2): (2u - 1) * sqrt(3 / fan_in)       # fan_in = prod(shape[1:])
    bn_weight: 0.5 + 0.5u;  bn_running_var: 0.5 + u
    bn_bias, bn_running_mean, bias: 0.2 (2u - 1)
    int: zeros (int64)

and every float tensor is cast to float32.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

#: the manifest's input recipe uses this stream index
INPUT_STREAM = 1_000_000


def _uniform(seed: int, index: int, shape) -> np.ndarray:
    return np.random.Generator(np.random.PCG64([seed, index])).random(tuple(shape))


def recipe_tensor(seed: int, index: int, shape, kind: str) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if kind == "int":
        return np.zeros(shape, dtype=np.int64)
    u = _uniform(seed, index, shape)
    if kind == "weight" and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = (2 * u - 1) * np.sqrt(3.0 / fan_in)
    elif kind == "bn_weight":
        v = 0.5 + 0.5 * u
    elif kind == "bn_running_var":
        v = 0.5 + u
    elif kind in ("bn_bias", "bn_running_mean", "bias", "weight"):
        v = 0.2 * (2 * u - 1)
    else:
        raise ValueError(f"unknown tensor kind {kind!r}")
    return v.astype(np.float32)


def recipe_state(entries: Iterable[tuple[str, tuple[int, ...], str]], seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: tensor}`` for ``(name, shape, kind)`` entries, numbered in the given order."""
    return {name: recipe_tensor(seed, i, shape, kind) for i, (name, shape, kind) in enumerate(entries)}


def recipe_input(shape, seed: int = 0) -> np.ndarray:
    """The fixtures' input: ``4 u - 2`` from stream 1,000,000, float32."""
    return (4 * _uniform(seed, INPUT_STREAM, shape) - 2).astype(np.float32)

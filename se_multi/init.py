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


#: float64 draws per chunk: the recipe's arithmetic runs on a chunk that stays in cache, written
#: straight into the float32 tensor. Drawing a tensor in chunks gives the same values as drawing it
#: whole (each double is the generator's next output, in order), and the in-place steps are the
#: formulas' own IEEE operations in the formulas' order, so the tensors are bit for bit the ones
#: the whole-array formulas give (tests/test_parity_resnet.py). Whole-array float64 temporaries,
#: four times a tensor's size, made VGG-16's 138M weights take 5.8 s; in chunks 0.6-1.7 s
#: (2026-12-02, 2-core EPYC).
_CHUNK = 1 << 16


def _affine(kind: str, shape: tuple[int, ...]) -> tuple[float, float, float]:
    """``(a, b, c)`` with the kind's value ``(a u + b) c`` for a uniform draw ``u`` (the recipe)."""
    if kind == "weight" and len(shape) >= 2:
        return 2.0, -1.0, float(np.sqrt(3.0 / int(np.prod(shape[1:]))))  # (2u - 1) sqrt(3 / fan_in)
    if kind == "bn_weight":
        return 0.5, 0.5, 1.0  # 0.5 + 0.5u
    if kind == "bn_running_var":
        return 1.0, 0.5, 1.0  # 0.5 + u
    if kind in ("bn_bias", "bn_running_mean", "bias", "weight"):
        return 2.0, -1.0, 0.2  # 0.2 (2u - 1)
    raise ValueError(f"unknown tensor kind {kind!r}")


def recipe_tensor(seed: int, index: int, shape, kind: str) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if kind == "int":
        return np.zeros(shape, dtype=np.int64)
    a, b, c = _affine(kind, shape)
    out = np.empty(shape, dtype=np.float32)
    flat = out.reshape(-1)
    generator = np.random.Generator(np.random.PCG64([seed, index]))
    chunk = np.empty(min(flat.size, _CHUNK), dtype=np.float64)
    for start in range(0, flat.size, _CHUNK):
        u = chunk[: min(_CHUNK, flat.size - start)]
        generator.random(out=u)
        if a != 1.0:  # a product by 1 is exact: skipped
            u *= a
        u += b
        if c != 1.0:
            u *= c
        flat[start : start + u.size] = u  # rounded to float32, as astype(np.float32)
    return out


def recipe_state(entries: Iterable[tuple[str, tuple[int, ...], str]], seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: tensor}`` for ``(name, shape, kind)`` entries, numbered in the given order."""
    return {name: recipe_tensor(seed, i, shape, kind) for i, (name, shape, kind) in enumerate(entries)}


def recipe_input(shape, seed: int = 0) -> np.ndarray:
    """The fixtures' input: ``4 u - 2`` from stream 1,000,000, float32."""
    return (4 * _uniform(seed, INPUT_STREAM, shape) - 2).astype(np.float32)

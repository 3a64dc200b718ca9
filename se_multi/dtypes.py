"""The dtypes, defined once (:data:`TABLE`: name, NumPy type, itemsize, tolerance row, floating or
not), and for the floating ones: how an array of any library is recognised as
floating, rounding to them, and their unit roundoff and range.

NumPy has no bfloat16 of its own. ``ml_dtypes`` (the package JAX, ONNX and TensorFlow use) adds
it to NumPy as a dtype of kind ``"V"``, beside the float8 types: a NumPy array of bfloat16, or a
JAX bfloat16 array (whose ``dtype`` is that NumPy dtype), is as much a floating array as a
float32 one, although ``dtype.kind == "f"`` says otherwise. Everything here that needs
``ml_dtypes`` imports it when called, and recognising an ``ml_dtypes`` array never imports it:
such an array exists only once ``ml_dtypes`` has been imported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

@dataclass(frozen=True)
class DType:
    """One dtype a backend may name in ``Backend.dtypes``."""

    #: se_multi's name (``Backend.dtypes``, ``dtype=``, ``--dtype``)
    name: str
    #: bytes per element
    itemsize: int
    #: a floating type: a compute dtype every op runs in (int8 is whole models only, quantized)
    floating: bool
    #: the row of the tolerance table it is validated with (``se_multi.conformance.POLICY``'s key)
    tolerance: str
    #: its NumPy type comes from ``ml_dtypes`` (NumPy has no bfloat16 of its own)
    ml_dtypes: bool = False
    #: other names accepted for it (``se-multi export --fp16``'s, NumPy's ``half``)
    aliases: tuple[str, ...] = ()

    @property
    def numpy(self) -> np.dtype:
        """Its NumPy dtype (``ml_dtypes.bfloat16`` for bfloat16, imported only then)."""
        if self.ml_dtypes:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, self.name))
        return np.dtype(self.name)


#: every dtype se_multi knows, finest floating type first; every per-backend map (torch's, CuPy's
#: C types, OpenVINO's precisions) is keyed by these names
TABLE: dict[str, DType] = {d.name: d for d in (
    DType("float64", 8, True, "float64"),
    DType("float32", 4, True, "float32"),
    DType("float16", 2, True, "float16", aliases=("half", "fp16")),
    DType("bfloat16", 2, True, "bfloat16", ml_dtypes=True),
    DType("int8", 1, False, "int8"),
)}

#: the compute dtypes a backend may offer (``Backend.dtypes`` names a subset), finest first
COMPUTE_DTYPES = tuple(name for name, d in TABLE.items() if d.floating)
_ALIASES = {alias: d.name for d in TABLE.values() for alias in d.aliases}


def canonical(dtype: Any) -> str | None:
    """The table's name of ``dtype`` (a name, an alias, or a NumPy dtype or type), or ``None`` if it
    is none of the table's."""
    if isinstance(dtype, str) and (dtype in TABLE or dtype in _ALIASES):
        return _ALIASES.get(dtype, dtype)
    try:
        name = str(np.dtype(dtype))
    except (TypeError, ValueError):
        return None
    return name if name in TABLE else None


def _ml_dtypes_float(dtype: np.dtype) -> bool:
    ml = sys.modules.get("ml_dtypes")
    if ml is None or dtype.kind != "V":
        return False
    try:
        ml.finfo(dtype)
    except (ValueError, TypeError):  # an ml_dtypes integer type (int4), or a structured dtype
        return False
    return True


def is_floating(dtype: Any) -> bool:
    """Whether ``dtype`` (an array's ``.dtype``, of any library) is a floating type: NumPy's own
    (kind ``"f"``, also CuPy's), an ``ml_dtypes`` one (bfloat16 and the float8 types, NumPy kind
    ``"V"``: NumPy and JAX arrays), or another library's whose name says so (``torch.bfloat16``,
    ``mlx.core.float16``)."""
    if isinstance(dtype, np.dtype):
        return dtype.kind == "f" or _ml_dtypes_float(dtype)
    return any(t in str(dtype) for t in ("float", "half"))


def numpy_float(x: np.ndarray) -> np.ndarray:
    """``x`` as a NumPy array of one of NumPy's own float types, for libraries that take only
    those (``torch.from_numpy`` refuses bfloat16): an ``ml_dtypes`` float array becomes float32,
    exactly (bfloat16 and the float8 types have at most float32's exponent range and fewer
    significand bits); any other array is returned as it is."""
    return x.astype(np.float32) if _ml_dtypes_float(x.dtype) else x


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a compute dtype's name (bfloat16: ``ml_dtypes.bfloat16``)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"expected a compute dtype ({', '.join(COMPUTE_DTYPES)}); got {name!r}")
    return TABLE[name].numpy


def finfo(name: str):
    """Machine limits of a compute dtype (``ml_dtypes.finfo`` for one of ``ml_dtypes``'s types)."""
    if TABLE.get(name) is not None and TABLE[name].ml_dtypes:
        import ml_dtypes

        return ml_dtypes.finfo(numpy_dtype(name))
    return np.finfo(numpy_dtype(name))


def unit_roundoff(name: str) -> float:
    """``u``: the largest relative error of rounding to nearest in ``name`` (half its epsilon)."""
    return float(finfo(name).eps) / 2


def largest_finite(name: str) -> float:
    """The largest finite value of a compute dtype (bfloat16 has float32's exponent range)."""
    return float(finfo(name).max)


def round_to(x: Any, name: str) -> np.ndarray:
    """The float64 values a computation in ``name`` holds for ``x``: each rounded to the nearest
    value of ``name`` (ties to even)."""
    return np.asarray(x, np.float64).astype(numpy_dtype(name)).astype(np.float64)

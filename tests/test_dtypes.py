"""The dtype table (se_multi.dtypes.TABLE) is the one list of dtype names: every backend's
``dtypes`` are names of it, every per-backend map (torch's dtypes, CuPy's C types, OpenVINO's
precisions, MLX's dtypes) covers exactly its backend's dtypes, and every row names its row of
the tolerance table."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from se_multi import conformance, dtypes
from se_multi.backend import Backend
from se_multi.dispatch import known_backends


def _load(target: str):
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("name", dtypes.TABLE)
def test_each_row_is_its_numpy_type(name):
    row = dtypes.TABLE[name]
    assert row.name == name
    assert row.numpy.itemsize == row.itemsize
    assert dtypes.is_floating(row.numpy) == row.floating
    assert str(row.numpy) == name  # the name NumPy (and ml_dtypes) gives it
    assert dtypes.canonical(row.numpy) == name == dtypes.canonical(name)
    assert all(dtypes.canonical(alias) == name for alias in row.aliases)


def test_the_tolerance_table_has_one_row_per_dtype():
    assert {row.tolerance for row in dtypes.TABLE.values()} == set(conformance.POLICY)
    for row in dtypes.TABLE.values():
        assert conformance.POLICY[row.tolerance].models_only == (not row.floating), row.name
    assert dtypes.COMPUTE_DTYPES == tuple(d for d, row in dtypes.TABLE.items() if row.floating)


def test_what_is_not_a_dtype_of_the_table_is_refused():
    assert dtypes.canonical("float128") is None and dtypes.canonical("int64") is None
    assert dtypes.canonical(object()) is None and dtypes.canonical("not a dtype") is None
    from se_multi.backends.numpy_backend import NumpyBackend

    with pytest.raises(ValueError, match=r"supports dtype float32, float64; got 'fp8'"):
        NumpyBackend("fp8")


def _classes():
    targets = dict(known_backends())
    targets["onnx-recorder"] = "se_multi.backends.onnx_recorder:OnnxRecorder"
    targets["shapes"] = "se_multi.tracing:ShapeBackend"
    return sorted(targets.items())


@pytest.mark.parametrize("name,target", _classes())
def test_every_backend_names_dtypes_of_the_table(name, target):
    cls = _load(target)
    assert issubclass(cls, Backend)
    assert cls.dtypes and set(cls.dtypes) <= set(dtypes.TABLE), f"{name}: {cls.dtypes}"
    assert len(set(cls.dtypes)) == len(cls.dtypes)


def test_cupy_instantiates_its_kernels_for_exactly_its_dtypes():
    from se_multi.backends import cupy_kernels
    from se_multi.backends.cupy_backend import CupyBackend

    assert set(cupy_kernels.CTYPES) == set(CupyBackend.dtypes)
    assert all(dtypes.TABLE[d].floating for d in CupyBackend.dtypes)


def test_openvino_has_a_precision_for_exactly_its_dtypes():
    from se_multi.backends.openvino_backend import PRECISIONS, OpenVinoBackend

    assert set(PRECISIONS) == set(OpenVinoBackend.dtypes)


def test_torch_has_each_of_its_dtypes_under_the_table_name():
    torch = pytest.importorskip("torch")
    from se_multi.backends.torch_backend import TorchBackend

    for name in TorchBackend.dtypes:
        dt = getattr(torch, name)
        assert isinstance(dt, torch.dtype) and dt.itemsize == dtypes.TABLE[name].itemsize, name


def test_mlx_has_each_of_its_dtypes_under_the_table_name():
    mx = pytest.importorskip("mlx.core")
    from se_multi.backends.mlx_backend import MlxBackend

    for name in MlxBackend.dtypes:
        dt = getattr(mx, name)
        assert isinstance(dt, mx.Dtype) and dt.size == dtypes.TABLE[name].itemsize, name


def test_the_onnx_recorder_writes_its_dtypes_as_their_onnx_element_types():
    onnx = pytest.importorskip("onnx")
    from se_multi.backends.onnx_recorder import OnnxRecorder

    for name in OnnxRecorder.dtypes:
        elem = onnx.helper.np_dtype_to_tensor_dtype(dtypes.numpy_dtype(name))
        assert onnx.helper.tensor_dtype_to_np_dtype(elem) == dtypes.TABLE[name].numpy, name
    with pytest.raises(ValueError, match="ONNX export supports dtype float32, float16; got 'bfloat16'"):
        OnnxRecorder("bfloat16")

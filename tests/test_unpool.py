"""max_pool2d_indices and max_unpool2d against PyTorch's own max_pool2d(return_indices=True) and
max_unpool2d (an independent implementation), ties included, on every backend that runs here."""

from __future__ import annotations

import numpy as np
import pytest

from se_multi import reference
from se_multi.shapes import ShapeError

torch = pytest.importorskip("torch")

#: (shape, kernel, stride): QuickNAT's 2x2/2 on even and odd sizes, overlapping and non-square windows
CASES = [((2, 3, 8, 10), (2, 2), (2, 2)), ((1, 4, 7, 9), (2, 2), (2, 2)),
         ((1, 2, 9, 7), (3, 3), (2, 2)), ((1, 3, 5, 4), (3, 2), (2, 1))]


def _inputs(shape):
    rng = np.random.default_rng(sum(shape))
    yield "normal", rng.standard_normal(shape)
    yield "constant", np.full(shape, 0.5)  # every window one tie: PyTorch takes the first in scan order
    yield "coarse", np.round(rng.random(shape) * 2) / 2  # some ties, some not


def _torch(x, kernel, stride):
    v, i = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride, return_indices=True)
    return v.numpy(), i.numpy(), torch.nn.functional.max_unpool2d(v, i, kernel, stride, output_size=x.shape[2:]).numpy()


@pytest.mark.parametrize("shape,kernel,stride", CASES)
def test_the_reference_is_pytorchs_pool_and_unpool(shape, kernel, stride):
    for what, x in _inputs(shape):
        v, i, u = _torch(x, kernel, stride)
        got_v, got_i = reference.max_pool2d_indices(x, kernel, stride)
        np.testing.assert_array_equal(got_v, v, err_msg=what)
        np.testing.assert_array_equal(got_i, i, err_msg=what)
        assert got_i.dtype == np.int64
        np.testing.assert_array_equal(reference.max_unpool2d(got_v, got_i, shape[2:]), u, err_msg=what)


def test_ties_take_the_first_maximum_in_scan_order():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = 1.0  # the second row of the first window: two equal maxima
    _, i = reference.max_pool2d_indices(x, (2, 2), (2, 2))
    assert i.tolist() == [[[[4, 2]]]]  # (1, 0) -> 4; the all-zero second window -> its first pixel (0, 2)


def _backends():
    from se_multi.dispatch import backend_status, get_backend

    status = backend_status()
    for name in ("numpy", "torch", "onnxruntime", "openvino", "mlx", "cupy"):
        if status.get(name, (False,))[0]:
            yield name, get_backend(name, "float32")


@pytest.fixture(scope="module")
def backends():
    return list(_backends())


@pytest.mark.parametrize("shape,kernel,stride", CASES)
def test_every_backend_pools_and_unpools_as_pytorch(backends, shape, kernel, stride):
    assert any(name == "numpy" for name, _ in backends)
    for name, ops in backends:
        for what, x in _inputs(shape):
            x = x.astype(np.float32)
            v, _, u = _torch(x, kernel, stride)
            values, indices = ops.max_pool2d_indices(ops.input(x), kernel, stride)
            np.testing.assert_array_equal(ops.to_numpy(ops.output(values)), v, err_msg=f"{name} {what}")
            got = ops.to_numpy(ops.output(ops.max_unpool2d(values, indices, shape[2:])))
            np.testing.assert_array_equal(got, u, err_msg=f"{name} {what}: unpooled")


def test_unpool_to_a_larger_map_as_pytorch():
    """QuickNAT unpools to its skip's size: an odd map pooled 2x2/2 loses its last row, and comes back."""
    x = np.random.default_rng(3).standard_normal((1, 2, 7, 9))
    v, i = reference.max_pool2d_indices(x, (2, 2), (2, 2))
    want = torch.nn.functional.max_unpool2d(torch.from_numpy(v), torch.from_numpy(i), 2, 2, output_size=(7, 9))
    np.testing.assert_array_equal(reference.max_unpool2d(v, i, (7, 9)), want.numpy())
    assert reference.max_unpool2d(v, i, (7, 9)).shape == (1, 2, 7, 9)


def test_shape_errors_are_one_line():
    x = np.zeros((1, 2, 4, 4))
    v, i = reference.max_pool2d_indices(x, (2, 2), (2, 2))
    with pytest.raises(ShapeError, match="gives an empty") as e:
        reference.max_pool2d_indices(np.zeros((1, 2, 1, 4)), (2, 2), (2, 2))
    assert "\n" not in str(e.value)
    with pytest.raises(ShapeError, match="indices of shape"):
        reference.max_unpool2d(v, i[:, :1], (4, 4))
    with pytest.raises(ShapeError, match=r"output_size \(1, 4\)"):
        reference.max_unpool2d(v, i, (1, 4))
    with pytest.raises(ShapeError, match="output_size"):
        reference.max_unpool2d(v, i, 4)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        reference.max_unpool2d(v, i + 16, (4, 4))

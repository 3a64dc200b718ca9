"""``help(se_multi.Backend)`` is the contract a third party writes a backend from, and ``owns``
recognises a framework's arrays by the classes their type derives from."""

from __future__ import annotations

import inspect
import re
import pydoc
import sys
import types

import pytest

import se_multi
from conftest import CPU_BACKENDS, require_backend
from se_multi.backend import Backend


def test_help_names_every_method_to_implement_and_every_option():
    text = pydoc.render_doc(se_multi.Backend, renderer=pydoc.plaintext)
    abstract = sorted(name for name, fn in inspect.getmembers(Backend, inspect.isfunction)
                      if getattr(fn, "__isabstractmethod__", False))
    abstract += ["to_numpy"]  # a staticmethod: getmembers sees the function, with the flag
    doc = inspect.getdoc(Backend)
    for name in set(abstract):
        assert f":meth:`{name}`" in doc, f"the class docstring does not list {name} to implement"
    for attr in ("name", "package", "install", "dtypes", "array_module", "extra", "traces_modules", "param_dtype"):
        assert f"``{attr}`` (default" in doc, attr
    for optional in ("run_model", "synchronize", "input", "output", "param", "shape", "max_abs", "owns",
                     "availability", "native_dtypes", "framework", "fold_batch_norm"):
        assert re.search(rf":meth:`{optional}`[^\n]*\(default", doc), f"{optional}: no default stated"
    for word in ("module.graphs(n).get_or_create(key, create)", "entry-points", "se-multi validate"):
        assert word in doc, word
    # every public method says what it does in help() itself
    for name, member in inspect.getmembers(Backend):
        if not name.startswith("_") and callable(member):
            assert inspect.getdoc(member), f"Backend.{name} has no docstring"
    assert "get_or_create(key, create)" in inspect.getdoc(Backend.run_model)
    assert "Override it if your framework returns before the work is done" in doc
    assert "Backend" in text


def test_owns_looks_at_the_classes_an_array_type_derives_from(monkeypatch):
    """A JAX array is a ``jaxlib`` type deriving from ``jax.Array``: ``array_module = "jax"``
    must own it (it did not: only the type's own top-level module was compared)."""
    base = type("Array", (), {"__module__": "fakejax"})
    impl = type("ArrayImpl", (base,), {"__module__": "fakejaxlib._core"})
    monkeypatch.setitem(sys.modules, "fakejax", types.ModuleType("fakejax"))
    monkeypatch.setitem(sys.modules, "fakejaxlib", types.ModuleType("fakejaxlib"))

    def backend(array_module):
        return type("B", (Backend,), {"array_module": array_module, "package": "fakejax"})

    assert backend("fakejax").owns(impl())
    assert backend(("other", "fakejaxlib")).owns(impl())
    assert not backend("other").owns(impl())
    assert not backend("fakejax").owns([1.0])  # builtins are nobody's
    monkeypatch.delitem(sys.modules, "fakejax")
    monkeypatch.delitem(sys.modules, "fakejaxlib")
    assert not backend("fakejax").owns(impl())  # a library never imported owns nothing


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32", "float64"])
def test_every_floating_numpy_array_goes_through_a_model(dtype_name):
    """bfloat16 is NumPy kind "V" (ml_dtypes): it was refused with 'expected a floating-point array'."""
    import numpy as np

    from se_multi.dtypes import numpy_dtype

    model = se_multi.create_model("mobilenetv3_small_100", backend="numpy")
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(numpy_dtype(dtype_name))
    got = se_multi.to_numpy(model(x))
    want = se_multi.to_numpy(model(x.astype(np.float32)))
    assert np.array_equal(got, want)


def test_a_non_floating_array_is_one_clear_error():
    import numpy as np

    model = se_multi.create_model("mobilenetv3_small_100", backend="numpy")
    with pytest.raises(TypeError, match=r"expected a floating-point array \(bfloat16, float16, float32 or "
                                        r"float64\); got dtype int32"):
        model(np.zeros((1, 3, 32, 32), np.int32))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_fold_into_a_narrower_dtype_is_the_float64_fold_rounded_once(dtype):
    """``fold_batch_norm(..., dtype=)`` works through the weights in blocks of rows: every value is
    the float64 fold's, converted as ``astype`` converts it (shapes below, one and many blocks)."""
    import numpy as np

    from se_multi.dtypes import numpy_dtype
    from se_multi.reference import _FOLD_BLOCK, fold_batch_norm

    rng = np.random.default_rng(0)
    for shape in ((5, 3, 3, 3), (7, _FOLD_BLOCK + 3), (300, 64, 3, 3), (1, 2), (4,) + (1,) * 3):
        w = rng.normal(size=shape).astype(np.float32)
        c = shape[0]
        mean, var, gamma, beta = rng.normal(size=c), rng.random(c) + 0.1, rng.normal(size=c), rng.normal(size=c)
        bias = rng.normal(size=c) if len(shape) == 2 else None
        w64, b64 = fold_batch_norm(w, bias, mean, var, gamma, beta, 1e-5)
        assert w64.dtype == b64.dtype == np.float64
        got_w, got_b = fold_batch_norm(w, bias, mean, var, gamma, beta, 1e-5, dtype=numpy_dtype(dtype))
        want_w, want_b = w64.astype(numpy_dtype(dtype)), b64.astype(numpy_dtype(dtype))
        assert got_w.dtype == want_w.dtype and got_w.shape == shape
        assert got_w.tobytes() == want_w.tobytes() and got_b.tobytes() == want_b.tobytes(), shape


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_backend_s_param_dtype_binds_the_weights_float64_folding_gives(backend):
    """Where an adapter sets ``param_dtype``, its fold and every other weight (``nn.host_weight``)
    go straight into it: the model it binds computes bit for bit what it computes from float64
    weights (``param_dtype = "float64"``, the default)."""
    import numpy as np

    from se_multi.conformance import model_cases
    from se_multi.dispatch import backend_class, get_backend
    from se_multi.init import recipe_input, recipe_state
    from se_multi.models import Model, build_model
    from se_multi.models.registry import entries

    require_backend(backend)
    # MobileNetV3: BatchNorm after every conv, depthwise ones too, SE convs with biases, a linear
    # head; SE-VGG-16 for 32x32: the adaptive pool folded into the classifier (a float64 GEMM).
    # Both as the conformance suite builds them, at its inputs: a compiling backend (MLX's CPU
    # build writes each fused chain's kernel with g++) then builds nothing that suite did not
    cases = dict(model_cases())
    models = [(build_model(name, **entries()[name].conformance_options), cases[name])
              for name in ("mobilenetv3_small_100", "se_vgg16_bn")]
    assert entries()["se_vgg16_bn"].conformance_options == {"hidden_features": 64, "img_size": (32, 32)}
    set_for, lacked = [], []
    for declaration, shape in models:
        state = recipe_state((k, s.shape, s.kind) for k, s in declaration.param_specs().items())
        x = recipe_input(shape, seed=3)
        for dtype in backend_class(backend).dtypes:
            if dtype == "int8":
                continue  # quantized from the float32 graph: float32 covers its weights
            try:
                direct, via_float64 = get_backend(backend, dtype=dtype), get_backend(backend, dtype=dtype)
            except ValueError as err:
                # a dtype the device here lacks (OpenVINO's CPU plugin lists FP16 only on CPUs
                # with float16 units; an AMD EPYC's list has BF16 and no FP16): the backend's own
                # refusal, tested in tests/test_openvino.py; any other error is ours
                if not re.search(rf"device \S+ has no {dtype} ", str(err)):
                    raise
                lacked.append(dtype)
                continue
            via_float64.param_dtype = "float64"
            if direct.param_dtype == "float64":
                continue
            set_for.append(dtype)
            got = se_multi.to_numpy(Model("m", declaration.bind(state, direct), direct)(x))
            want = se_multi.to_numpy(Model("m", declaration.bind(state, via_float64), via_float64)(x))
            assert got.tobytes() == want.tobytes(), (backend, dtype, shape)
    assert "float32" in set_for, (set_for, lacked)  # every built-in CPU backend folds straight into float32


def test_host_weight_copies_a_checkpoint_tensor_and_never_a_shape_tracer_s_zeros():
    """What a bind hands ``param``: a fresh array in the backend's ``param_dtype`` (the bound model
    never shares memory with the caller's state), except a broadcast view already in that dtype
    (the shape tracers' weights: copying one would fill a VGG-16's 138M weights to trace a shape)."""
    import numpy as np

    from se_multi.dispatch import get_backend
    from se_multi.nn import host_weight
    from se_multi.tracing import ShapeBackend

    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    for ops, dtype in ((get_backend("numpy"), np.float32), (get_backend("numpy", dtype="float64"), np.float64)):
        got = host_weight(weight, ops)
        assert got.dtype == dtype and np.array_equal(got, weight) and not np.shares_memory(got, weight)
    zeros = np.broadcast_to(np.zeros((), np.float64), (4096, 25088))
    assert host_weight(zeros, ShapeBackend()) is zeros

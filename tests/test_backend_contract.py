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
from se_multi.backend import Backend


def test_help_names_every_method_to_implement_and_every_option():
    text = pydoc.render_doc(se_multi.Backend, renderer=pydoc.plaintext)
    abstract = sorted(name for name, fn in inspect.getmembers(Backend, inspect.isfunction)
                      if getattr(fn, "__isabstractmethod__", False))
    abstract += ["to_numpy"]  # a staticmethod: getmembers sees the function, with the flag
    doc = inspect.getdoc(Backend)
    for name in set(abstract):
        assert f":meth:`{name}`" in doc, f"the class docstring does not list {name} to implement"
    for attr in ("name", "package", "install", "dtypes", "array_module", "extra", "traces_modules"):
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

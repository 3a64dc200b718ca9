"""The op table (se_multi.op_table) is the one list of ops: every list that names ops is derived
from it, and every backend implements or inherits each op in it. A new op that is missing
anywhere it must be (an adapter, MLX's device placement, the ONNX recorder, a conformance
check, a shape rule) fails here."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from se_multi import conformance, op_table, reference
from se_multi.backend import ACTIVATIONS, Backend
from se_multi.backends.numpy_backend import NumpyBackend
from se_multi.dispatch import known_backends
from se_multi.tracing import ShapeBackend

NAMES = set(op_table.NAMES)


def _load(target: str):
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def _params(fn) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(fn).parameters if p != "self")


# ----------------------------------------------------------------------------- the table itself
def test_the_table_is_primitives_then_fused_ops_each_named_once():
    assert len(op_table.TABLE) == len(NAMES)
    assert op_table.NAMES == op_table.PRIMITIVES + op_table.FUSED_OPS
    assert {op.kind for op in op_table.TABLE} == {op_table.PRIMITIVE, op_table.FUSED}
    for op in op_table.TABLE:
        assert op.doc, op.name
        if op.kind == op_table.FUSED:
            assert op.composes and set(op.composes) <= set(op_table.PRIMITIVES), op.name
        else:
            assert not op.composes and not op.takes_activation, op.name


def test_the_abstract_methods_of_backend_are_exactly_the_primitives():
    assert set(Backend.__abstractmethods__) - {"asarray", "to_numpy"} == set(op_table.PRIMITIVES)


def test_every_fused_op_has_its_default_on_backend():
    assert Backend.FUSED_OPS == op_table.FUSED_OPS
    for name in op_table.FUSED_OPS:
        default = getattr(Backend, name)
        assert inspect.isfunction(default) and not getattr(default, "__isabstractmethod__", False), name


def test_activations_are_primitives_of_the_table():
    assert ACTIVATIONS == reference.ACTIVATIONS == op_table.ACTIVATIONS
    assert set(ACTIVATIONS) <= set(op_table.PRIMITIVES)


@pytest.mark.parametrize("name", op_table.NAMES)
def test_backend_reference_and_shape_rule_take_the_declared_arguments(name):
    op = op_table.OPS[name]
    assert _params(getattr(Backend, name)) == op.args
    assert _params(op.reference) == op.args
    # the rule takes the op's arguments in order (a function of se_multi.shapes names them x_shape, ...)
    assert len(_params(op.shape)) == len(op.args)


# ----------------------------------------------------------------------------- every backend has every op
def _backend_classes():
    classes = {name: target for name, target in known_backends().items()}
    classes["onnx-recorder"] = "se_multi.backends.onnx_recorder:OnnxRecorder"
    classes["shapes"] = "se_multi.tracing:ShapeBackend"
    classes["counting"] = "se_multi.info:CountingBackend"
    return classes


@pytest.mark.parametrize("name,target", sorted(_backend_classes().items()))
def test_every_registered_backend_implements_or_inherits_every_op(name, target):
    cls = _load(target)  # importing an adapter imports no framework
    assert issubclass(cls, Backend)
    assert not getattr(cls, "__abstractmethods__", frozenset()), f"{name} leaves {sorted(cls.__abstractmethods__)} abstract"
    for op in op_table.NAMES:
        method = getattr(cls, op)
        assert callable(method), f"{name}.{op}"
        assert not getattr(method, "__isabstractmethod__", False), f"{name}.{op}"


def test_the_numpy_backend_is_the_reference_where_it_does_not_write_an_op_out():
    for name in op_table.PRIMITIVES:
        if name not in ("conv2d", "batch_norm", "max_pool2d", "avg_pool2d"):  # the faster forms (its docstring)
            assert NumpyBackend.__dict__[name].__func__ is op_table.OPS[name].reference, name


def test_mlx_places_every_op_on_its_device():
    """MLX wraps the ops of ``_OPS`` in ``mx.stream(device)``; an op missing there would run on
    MLX's default device. Read from the module, which imports no mlx."""
    from se_multi.backends import mlx_backend

    assert NAMES <= set(mlx_backend._OPS)
    assert {"asarray", "input", "output", "param"} <= set(mlx_backend._OPS)


def test_onnx_fed_engines_run_every_op_as_a_one_op_graph():
    from se_multi.backends import onnx_fed
    from se_multi.backends.onnxruntime_backend import OnnxRuntimeBackend
    from se_multi.backends.openvino_backend import OpenVinoBackend

    assert set(onnx_fed.OPS) == NAMES
    for cls in (OnnxRuntimeBackend, OpenVinoBackend):
        for op in op_table.NAMES:  # made by OnnxFedBackend.__init_subclass__, not inherited from a default
            assert op in cls.__dict__ and cls.__dict__[op].__name__ == op, f"{cls.__name__}.{op}"


# ----------------------------------------------------------------------------- conformance and recording
def test_conformance_checks_every_op():
    missing = NAMES - conformance.covered_ops()
    assert not missing, f"ops of the table without a conformance check: {sorted(missing)}"


def _op_checks():
    return conformance.primitive_checks() + conformance.fused_checks()


def test_the_onnx_recorder_records_every_op():
    """Every op's conformance checks, run on the recorder: each returns a tensor a recorded ONNX
    node made (not an input or a weight), so the op has an ONNX form."""
    pytest.importorskip("onnx")
    from se_multi.backends.onnx_recorder import OnnxRecorder, Sym

    recorded = set()
    for check in _op_checks():
        recorder = OnnxRecorder("float32")
        got, _ = check.run(conformance.Ctx(recorder, np.random.default_rng(0)))
        made = {out for node in recorder.nodes for out in node.output}
        assert isinstance(got, Sym) and got.name in made, check.name
        recorded.add(check.op)
    assert recorded == NAMES


class _Spy(NumpyBackend):
    """float64 NumPy whose fused ops are Backend's defaults; every op call checks its output shape
    against the table's shape rule, and each fused op records the primitives it called."""

    def __init__(self):
        super().__init__("float64")
        self.calls: list[list[str]] = []
        self.composed: dict[str, set[str]] = {}


def _spied(name):
    def method(self, *args, **kwargs):
        op = op_table.OPS[name]
        fused = op.kind == op_table.FUSED
        for frame in self.calls:
            frame.append(name)
        if fused:
            self.calls.append([])
        try:
            out = (getattr(Backend, name)(self, *args, **kwargs) if fused
                   else getattr(super(_Spy, self), name)(*args, **kwargs))
        finally:
            called = self.calls.pop() if fused else None
        got = tuple(tuple(np.shape(o)) for o in out) if isinstance(out, tuple) else tuple(np.shape(out))
        assert got == tuple(op.output_shape(*args, **kwargs)), f"{name}: shape rule"
        if called is not None:
            used = set(called) - (set(ACTIVATIONS) if op.takes_activation else set())
            assert used <= set(op.composes) | set(op_table.FUSED_OPS), f"{name} called {sorted(used)}"
            self.composed.setdefault(name, set()).update(c for c in called if c in op_table.PRIMITIVES)
            np.testing.assert_allclose(out, op.reference(*args, **kwargs), rtol=1e-13, atol=1e-13,
                                       err_msg=f"{name}: the reference differs from Backend's default")
        return out

    return method


for _name in op_table.NAMES:
    setattr(_Spy, _name, _spied(_name))


def test_shape_rules_compositions_and_fused_references_agree_with_the_reference():
    """On every op check of the conformance suite (float64 NumPy): each op's output has the shape
    its rule gives, each fused op's default calls the primitives the table says it composes, and
    the table's reference of a fused op equals that default."""
    ops = _Spy()
    for check in _op_checks():
        got, want = check.run(conformance.Ctx(ops, np.random.default_rng(0)))
        assert np.shape(got) == np.shape(want), check.name
    for name in op_table.FUSED_OPS:
        op = op_table.OPS[name]
        assert ops.composed[name] - set(ACTIVATIONS if op.takes_activation else ()) >= set(op.composes) - set(ACTIVATIONS), name


def test_the_shape_tracer_follows_every_rule():
    """Primitives the tracer does not write out come from the table's rule (a new primitive needs
    no method there); the ones it writes out give what the rule gives."""
    ops = ShapeBackend()
    for check in conformance.primitive_checks():
        try:
            got, want = check.run(conformance.Ctx(ops, np.random.default_rng(0)))
        except Exception as exc:  # the reference half runs on NumPy: only the shapes matter here
            raise AssertionError(f"{check.name}: {exc}") from exc
        assert tuple(got.shape) == np.shape(want), check.name


def test_cupy_kernels_have_a_code_for_every_activation():
    from se_multi.backends import cupy_kernels

    assert set(cupy_kernels.ACT_CODES) == {None, *ACTIVATIONS}


def test_an_ops_declared_cases_are_its_conformance_checks(monkeypatch):
    """A new op declared with ``cases`` is checked on every backend with no edit to the suite:
    here a toy primitive, right on one backend and wrong on another."""
    negate = op_table.Op("negate", op_table.PRIMITIVE, ("x",), lambda x: x, "``-x``.",
                         cases=op_table._fmaps("x", shapes=op_table.FMAP_SHAPES[:2]))
    monkeypatch.setattr(reference, "negate", lambda x: -x, raising=False)
    monkeypatch.setattr(op_table, "TABLE", op_table.TABLE + (negate,))

    class Right(NumpyBackend):
        def negate(self, x):
            return -x

    class Wrong(NumpyBackend):
        def negate(self, x):
            return x

    checks = [c for c in conformance.case_checks(op_table.PRIMITIVE) if c.op == "negate"]
    assert [c.name for c in checks] == ["negate[1x3x1x1]", "negate[2x6x7x9]"]
    assert checks == [c for c in conformance.primitive_checks() if c.op == "negate"]
    right, wrong = Right("float32"), Wrong("float32")
    assert all(conformance.run_check(c, right).passed for c in checks)
    # the inputs are N(0, 1) draws: -x differs from x wherever x is not zero
    assert not any(conformance.run_check(c, wrong).passed for c in checks)


def test_a_case_names_only_arguments_its_op_takes():
    with pytest.raises(AssertionError, match="negate: a case names arguments it does not take"):
        bad = op_table.Op("negate", op_table.PRIMITIVE, ("x",), lambda x: x, "",
                          cases=(op_table.Case({"y": op_table.Arg((1, 1, 1, 1))}),))
        saved = op_table.TABLE
        try:
            op_table.TABLE = saved + (bad,)
            op_table._check()
        finally:
            op_table.TABLE = saved
    with pytest.raises(AssertionError, match="role must be one of"):
        op_table.Arg((1, 2, 3, 4), role="weights")

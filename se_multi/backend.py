"""The backend protocol: the one op table every array library implements.

Rules (read these before writing a backend):

1. A backend is one subclass of :class:`Backend` in one module. It implements the
   *primitives* (the abstract methods below) and nothing else is required: every
   *fused op* (``squeeze``, ``excite``, ``scale``, ``scale_add_relu``, ...) has a
   default composed from the primitives, so a new backend passes the conformance
   suite as soon as its primitives are right. Override a fused op only for speed,
   and the same conformance check then proves the override right.
2. Models and blocks call ops only. There is no ``if backend == ...`` outside
   ``backends/``; anything backend-specific (layout, device, kernels) lives in the
   backend.
3. No framework is imported until the backend is instantiated (import it inside
   ``__init__`` or methods). ``import se_multi`` must import no torch, mlx or cupy.
4. Feature maps are *opaque* between ops. The public boundary is NCHW:
   :meth:`Backend.input` turns a public NCHW array into the backend's internal
   feature map (an NHWC backend transposes here, once per forward) and
   :meth:`Backend.output` turns it back. Weights are converted once, at load, by
   :meth:`Backend.param`, which receives them in PyTorch layout (conv ``OIHW``,
   linear ``(out, in)``); an NHWC backend transposes them there, never per op.
5. Convolution arguments arrive normalised: ``stride`` and ``dilation`` are
   ``(h, w)`` tuples and ``padding`` is ``(top, bottom, left, right)``.
6. Per-channel vectors (``s`` of :meth:`mul_channel`, the result of
   :meth:`global_avg_pool`) are ``(N, C)`` native arrays; a per-pixel map ``q``
   of :meth:`mul_pixel` is a one-channel feature map.
7. The compute dtype is fixed per backend instance (``dtype=``); :meth:`asarray`
   and :meth:`param` cast to it. ``device=`` is the backend's own device name
   (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"gpu"``).
8. :meth:`to_numpy` is a static method and :meth:`owns` a class method: an adapter
   converts its own arrays, and :func:`se_multi.to_numpy` finds the adapter that owns
   an array without instantiating anything (it names no framework itself).
9. Shapes and their errors come from :mod:`se_multi.shapes`, never worked out again
   in an adapter. A model checks its input size against its own graph before any
   backend runs, so an op never sees an input that gives an empty output.
10. Every model call goes through :meth:`run_model`; ``se-multi validate`` checks it
   on whole models as well as every op. Anything :meth:`run_model` compiles is kept
   in the bound module's own bounded cache (:meth:`se_multi.nn.Module.graphs`), never
   in the backend object, so dropping a model frees it (:mod:`se_multi.cache`). A
   model may be called from several threads at once: a backend whose library is not
   thread-safe serialises inside :meth:`run_model` and says so.

Whole-graph backends (an engine that takes a whole model, such as ONNX Runtime)
subclass :class:`GraphBackend` instead; see its docstring.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import sys
from importlib import metadata
from typing import Any, ClassVar, Sequence

import numpy as np

from se_multi import op_table
from se_multi.dtypes import canonical

Array = Any  # a backend's native array type

#: Activation and gate names an op may receive; each maps to a primitive method.
ACTIVATIONS = op_table.ACTIVATIONS


class BackendUnavailable(RuntimeError):
    """A backend's package is missing or it cannot run here (no device)."""


class Backend(abc.ABC):
    """The backend contract: one subclass runs every se_multi model on one array library.

    Write one, register it, and prove it with ``se-multi validate --backend NAME --dtype D``
    for each dtype in :attr:`dtypes` (every op, block and whole model against the NumPy float64
    reference: max error, bias, and that it computes in the dtype it claims). A complete
    example, on JAX, is ``examples/se_multi_jax`` in se_multi's repository (its page:
    ``docs/writing-a-backend.md``).

    **Implement** (abstract: the class cannot be instantiated without them). Feature maps are
    *your* arrays, NCHW as seen from outside (see :meth:`input`); conv weights arrive OIHW,
    linear weights ``(out, in)``, both as :meth:`param` made them; every result is in the
    compute dtype ``self.dtype``:

    - arrays: :meth:`asarray` (NumPy or any backend's array -> yours, in the compute dtype, on
      the device) and :meth:`to_numpy` (a ``staticmethod``: yours -> NumPy, same values;
      bfloat16 may stay bfloat16, an ``ml_dtypes`` array, or become float32);
    - the primitives of the op table (:mod:`se_multi.op_table`), each listed here with what it
      computes (output sizes and their errors: :mod:`se_multi.shapes`, e.g. ``pool2d``):

    {PRIMITIVES}

    **Class attributes** (set them on your subclass):

    - ``name`` (default ``""``): the label validate, bench and ``repr`` show. Users *select* a
      backend by its entry-point name or ``"package.module:Class"``, not by ``name``.
    - ``package`` (default ``None``): the import name of your framework. When
      ``importlib.util.find_spec(package)`` finds nothing, the backend is "unavailable" (exit 4)
      with :attr:`install` as the hint; nothing is imported to decide it.
    - ``install`` (default ``None``): the command that installs what is missing, shown to users
      (default: ``pip install <the distribution that ships your class>``).
    - ``dtypes`` (default ``("float32",)``): the compute dtypes you support, names of
      :data:`se_multi.dtypes.TABLE` (``"float32"``, ``"float64"``, ``"float16"``, ``"bfloat16"``;
      ``"int8"`` for a quantizing whole-graph engine); the first is the default.
      ``__init__`` refuses any other (``ValueError``), so this decides what ``create_model``,
      ``validate`` and ``bench`` accept. Claim a dtype only if you *compute* in it: validate fails
      a backend whose errors are those of a finer dtype ("does not compute in bfloat16").
    - ``array_module`` (default ``None``, meaning ``package``): the top-level module, or a tuple
      of them, in which your array type or a class it derives from is defined; :meth:`owns` uses
      it so that :func:`se_multi.to_numpy` and the input checks find you for an array of yours.
      ``"jax"`` covers JAX's ``jaxlib`` arrays (they derive from ``jax.Array``).
    - ``extra`` (default ``None``): se_multi's own pip extra for a built-in backend; leave it.
    - ``traces_modules`` (default ``False``): only for shape tracers (se_multi's own), which get
      :meth:`scope` entered around every module.

    **Optional methods**, with their defaults and when to override them:

    - :meth:`run_model` (default: ``self.output(module(self, self.input(x)))``, op by op):
      every model call goes through it. Override it to run a whole forward at once (trace,
      jit, compile, an inference session or an inference guard); keep what you compile in
      ``module.graphs(n).get_or_create(key, create)`` (see :meth:`run_model`).
    - :meth:`synchronize` (default: returns ``x`` at once): wait until ``x`` is computed.
      **Override it if your framework returns before the work is done** (JAX, CUDA, MLX's lazy
      graphs): bench times ``synchronize(model(x))``. Bench also times calls through
      :meth:`to_numpy` once per configuration, and flags a row whose ``synchronize`` returns early.
    - :meth:`input` / :meth:`output` (default: :meth:`asarray` / as is): the layout conversion
      at the model boundary, for an NHWC backend (then also :meth:`param` and :meth:`shape`).
    - :meth:`param` (default: :meth:`asarray`): a weight at load, PyTorch layout; transpose
      it here for another layout, never per op.
    - :meth:`shape` (default: ``x.shape``): the NCHW shape of a feature map of yours.
    - :meth:`max_abs` (default: through :meth:`to_numpy`): override to reduce on the device.
    - :meth:`owns` (default: the :attr:`array_module` rule): override only if that does not fit.
    - :meth:`availability` (default: :attr:`package` installed): add a device probe
      (returns ``(False, "installed, no CUDA device")``).
    - :meth:`native_dtypes` (default: float32 and float64): the dtypes that run at full speed
      here (``se-multi backends``); :meth:`framework` (default: the distribution and version of
      :attr:`package`, from metadata).
    - :meth:`fold_batch_norm` (default: :func:`se_multi.reference.fold_batch_norm`, computed in
      float64) and ``param_dtype`` (default ``"float64"``: weights reach :meth:`param` in
      float64); set ``self.param_dtype`` (e.g. ``"float32"``) in ``__init__`` where :meth:`param`
      rounds to that NumPy dtype anyway: the fold then rounds into it directly, same values.
    - fused ops (:attr:`FUSED_OPS`, from the op table): defaults composed from the primitives;
      override one only for speed, validate checks it like a primitive:

    {FUSED}

    **Instance attributes**: ``dtype`` (the compute dtype's name) and ``device`` (your
    device name, or ``None``), set by ``Backend.__init__(dtype, device)``, which your
    ``__init__`` calls first; import your framework in ``__init__``, never at module level.

    **Register** it in your package's ``pyproject.toml``; users then select it by that name::

        [project.entry-points."se_multi.backends"]
        mybackend = "mypkg.mod:MyBackend"
    """

    #: the label reports and ``repr`` show (validate, bench). Users *select* a backend by
    #: its registry name: a built-in name, the name of its ``se_multi.backends`` entry point,
    #: or ``"package.module:Class"``; ``name`` need not equal any of them.
    name: ClassVar[str] = ""
    #: the import name whose absence makes the backend unavailable (found without importing it)
    package: ClassVar[str | None] = None
    #: the top-level module(s) in which the type of this backend's arrays, or a class it derives
    #: from, is defined (default: ``package``): :meth:`owns`
    array_module: ClassVar[str | tuple[str, ...] | None] = None
    #: the pip extra of se-multi that installs a built-in backend's package (se_multi's own)
    extra: ClassVar[str | None] = None
    #: what installs a missing ``package`` (default: the se-multi extra for a built-in
    #: backend, else the distribution that ships the backend class)
    install: ClassVar[str | None] = None
    #: compute dtypes this backend computes in, the first is the default; ``__init__`` refuses
    #: others, so this is what create_model, validate and bench accept
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    #: whether :class:`se_multi.nn.Module` calls :meth:`scope` around each module (shape tracers only)
    traces_modules: ClassVar[bool] = False
    #: the NumPy dtype :meth:`param` rounds a weight to, where it does so on the host with NumPy's
    #: own conversion (float64 in, ``asarray(w, dtype)``): the fold then rounds its float64 products
    #: straight into it, the same values without a float64 copy of every weight. ``"float64"`` (the
    #: default): weights come in float64, and :meth:`param` rounds them its way
    param_dtype: str = "float64"

    def __init__(self, dtype: str = "float32", device: str | None = None):
        given = dtype
        dtype = canonical(dtype)  # None if not a dtype at all: reported below with the supported ones
        if dtype not in self.dtypes:
            raise ValueError(
                f"backend {self.name!r} supports dtype {', '.join(self.dtypes)}; got {given!r}"
            )
        self.dtype = dtype
        self.device = device

    # ------------------------------------------------------------------ availability
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """``(usable, reason)`` without importing the framework where possible."""
        if cls.package and importlib.util.find_spec(cls.package) is None:
            return False, f"not installed: {cls.install_hint()}"
        return True, "available"

    @classmethod
    def native_dtypes(cls) -> tuple[str, ...]:
        """The dtypes of :attr:`dtypes` that run at full hardware speed on this machine's default
        device (``se-multi backends`` shows them), decided without importing the framework.
        Default: float32 and float64, which every CPU has. A backend with reduced-precision
        kernels adds those the CPU has hardware for (:func:`se_multi.cpu.cpu_info`)."""
        return tuple(d for d in cls.dtypes if d in ("float32", "float64"))

    @classmethod
    def framework(cls) -> str:
        """The framework this backend runs on and its installed version, e.g. ``"torch 2.13.0"``,
        from the distribution that ships :attr:`package` (read from metadata: nothing imported).
        ``se-multi bench`` lists it for every benchmarked backend, third-party ones included."""
        if not cls.package:
            return "no framework"
        top = cls.package.partition(".")[0]
        dists = metadata.packages_distributions().get(top, []) or [top]
        for dist in sorted(dists, key=lambda d: d != top):  # the same-named distribution first
            try:
                return f"{dist} {metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
        return f"{top} (version unknown)"

    @classmethod
    def install_hint(cls) -> str:
        """The command that installs this backend's package (see :attr:`install`)."""
        if cls.install:
            return cls.install
        top = cls.__module__.partition(".")[0]
        if top == "se_multi":
            return f"pip install 'se-multi[{cls.extra or cls.package}]'"
        dists = metadata.packages_distributions().get(top)
        return f"pip install {dists[0]}" if dists else f"install the {cls.package!r} package"

    def __repr__(self) -> str:
        dev = f", device={self.device!r}" if self.device else ""
        return f"<{type(self).__name__} {self.name!r} dtype={self.dtype}{dev}>"

    # ------------------------------------------------------------------ arrays
    @abc.abstractmethod
    def asarray(self, x: Any) -> Array:
        """NumPy, native or another backend's array -> native array in the compute dtype, on the
        device. A NumPy array may be of any float type, bfloat16 (``ml_dtypes``, NumPy kind
        ``"V"``) included: :func:`se_multi.dtypes.numpy_float` makes it float32, exactly, for a
        library that takes only NumPy's own types; :func:`se_multi.to_numpy` converts another
        backend's array."""

    @staticmethod
    @abc.abstractmethod
    def to_numpy(x: Array) -> np.ndarray:
        """Native array -> NumPy array (same layout, same values). A static method: it
        depends on the array alone, so :func:`se_multi.to_numpy` can call it on the class."""

    @classmethod
    def max_abs(cls, x: Array) -> float:
        """``max |x|`` as a Python float: NaN if ``x`` holds a NaN, inf if it holds an Inf (so one
        reduction serves the input checks' finiteness and range). Override to reduce where the
        array lives (on its device, without copying it to the host)."""
        x = np.asarray(cls.to_numpy(x))
        return float(np.max(np.abs(x))) if x.size else 0.0

    @classmethod
    def owns(cls, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library: whether its type, or a class it
        derives from, is defined in a module whose top-level package is :attr:`array_module` (one
        name or a tuple of them; default :attr:`package`). The classes a type derives from count
        because a framework's array type may live in another package than its name: a JAX array
        is a ``jaxlib._jax.ArrayImpl`` deriving from ``jax.Array``, so ``array_module = "jax"``
        owns it. Nothing is imported: an array of a library that was never imported cannot exist.
        Override only if neither rule fits your arrays."""
        names = cls.array_module or cls.package
        if not names:
            return False
        tops = {n.partition(".")[0] for n in ((names,) if isinstance(names, str) else names)}
        tops = {t for t in tops if t in sys.modules}
        if not tops:
            return False
        return any(getattr(k, "__module__", "").partition(".")[0] in tops for k in type(x).__mro__ if k is not object)

    def input(self, x: Any) -> Array:
        """Public NCHW array -> internal feature map (layout conversion happens here, once)."""
        return self.asarray(x)

    def output(self, y: Array) -> Array:
        """Internal feature map or (N, K) logits -> public NCHW / (N, K) native array."""
        return y

    def param(self, w: np.ndarray, kind: str) -> Array:
        """A folded weight, PyTorch layout, NumPy in :attr:`param_dtype` (float64 by default) ->
        native, once at load.

        ``kind`` is ``"conv"`` (OIHW), ``"linear"`` ((out, in)) or ``"vector"`` ((C,)).
        """
        return self.asarray(w)

    def fold_batch_norm(self, w, b, mean, var, gamma, beta, eps):
        """At load: fold inference BatchNorm into the preceding conv -> ``(w', b')``, NumPy,
        computed in float64 (:func:`se_multi.reference.fold_batch_norm`) and given in
        :attr:`param_dtype`; :meth:`param` then converts them."""
        from se_multi.reference import fold_batch_norm

        return fold_batch_norm(w, b, mean, var, gamma, beta, eps, dtype=self.param_dtype)

    def shape(self, x: Array) -> tuple[int, ...]:
        """NCHW shape of an internal feature map (or the shape of a vector/matrix)."""
        return tuple(int(d) for d in x.shape)

    def synchronize(self, x: Array) -> Array:
        """Wait until ``x`` (a result of this backend) is computed, and return it.

        Default: returns ``x`` at once, which is right only for a framework whose calls return
        finished results (NumPy, PyTorch on a CPU, ONNX Runtime, OpenVINO). A framework that
        dispatches asynchronously (JAX, CUDA streams) or builds lazy graphs (MLX) must override it
        (``jax.block_until_ready(x)``, ``torch.cuda.synchronize()``, ``mx.eval(x)``): bench times
        ``synchronize(model(x))``, and without it would time the dispatch alone. Bench checks
        this once per configuration against calls followed by :meth:`to_numpy` (which must wait)
        and flags, and then times through :meth:`to_numpy`, a backend whose ``synchronize``
        returns early."""
        return x

    def run_model(self, module: Any, x: Any) -> Array:
        """Run a bound module on a public NCHW input and return the public output.

        This is how :class:`se_multi.Model` calls every backend, after checking the input
        (an array of a floating type: NumPy's, bfloat16 from ``ml_dtypes``, or any backend's;
        rank, channels, finite values in the dtype's range, and that its size fits the model's
        graph). ``module`` is the model bound on this backend (:meth:`se_multi.nn.Module.bind`):
        calling it, ``module(self, feature_map)``, runs its ``forward`` op by op on this backend.

        The default is ``self.output(module(self, self.input(x)))``. Override it to run a whole
        forward at once (``jax.jit``, ``torch.compile``, ``mx.compile``, an inference session, one
        inference guard around the whole call); nothing in the models changes. Keep what you
        compile in the bound module's own cache, never in ``self`` (a backend object is shared by
        models, and dropping a model must free what was compiled for it)::

            graph = module.graphs(4).get_or_create(key, lambda: compile(module, x.shape))

        ``module.graphs(n)`` is a thread-safe least-recently-used cache of at most ``n`` entries,
        made on first use and freed with the model; ``get_or_create(key, create)`` returns the
        entry for ``key`` (any hashable: an input shape, or one constant for a graph that serves
        every shape), calling ``create()`` once when it is missing, also when several threads ask
        at once. It also has ``keys()``, ``clear()`` and ``len()``. A model may be called from
        several threads at once: a framework that is not thread-safe serialises here.
        ``se-multi validate`` runs every whole-model check through this method.
        """
        return self.output(module(self, self.input(x)))

    def scope(self, module: Any):
        """Entered around each module's forward when :attr:`traces_modules` is set (shape tracers)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ primitives
    # The abstract primitives (conv2d, linear, ..., concat_channels) are the op table's
    # (:mod:`se_multi.op_table`): added below the class, each with the table's docstring and the
    # reference function's signature.

    # ------------------------------------------------------------------ dispatch helpers
    def act(self, name: str | None, x: Array) -> Array:
        """Apply the activation/gate called ``name`` (``None`` = identity)."""
        if name is None:
            return x
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
        return getattr(self, name)(x)

    # ------------------------------------------------------------------ fused ops
    # Each default is the definition; a backend overrides one only to run it faster.
    def conv2d_act(self, x: Array, w: Array, b: Array | None, act: str | None, stride=(1, 1),
                   padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1) -> Array:
        """Convolution + bias + activation (BN is already folded into ``w``, ``b``)."""
        return self.act(act, self.conv2d(x, w, b, stride, padding, dilation, groups))

    def squeeze(self, x: Array) -> Array:
        """SE squeeze: global average pool, feature map -> (N, C)."""
        return self.global_avg_pool(x)

    def excite(self, z: Array, w1: Array, b1: Array | None, w2: Array, b2: Array | None,
               act: str = "relu", gate: str = "sigmoid") -> Array:
        """SE excitation on the squeezed (N, C) vector: FC -> act -> FC -> gate."""
        return self.act(gate, self.linear(self.act(act, self.linear(z, w1, b1)), w2, b2))

    def scale(self, x: Array, s: Array) -> Array:
        """SE scale: multiply each channel by its gate."""
        return self.mul_channel(x, s)

    def scale_add_relu(self, x: Array, s: Array, residual: Array) -> Array:
        """``relu(x * s + residual)``: the end of a standard SE residual unit."""
        return self.relu(self.add(self.scale(x, s), residual))

    def add_relu(self, a: Array, b: Array) -> Array:
        """``relu(a + b)``: the end of a plain residual unit."""
        return self.relu(self.add(a, b))

    def spatial_gate(self, x: Array, w: Array, b: Array | None) -> Array:
        """sSE gate: 1x1 conv C -> 1, then sigmoid; a one-channel map."""
        return self.sigmoid(self.conv2d(x, w, b))

    def scse(self, x: Array, s: Array, q: Array, mode: str = "add") -> Array:
        """scSE combine: ``x*s + x*q`` (Roy et al.) or ``max(x*s, x*q)``."""
        cse, sse = self.mul_channel(x, s), self.mul_pixel(x, q)
        if mode == "add":
            return self.add(cse, sse)
        if mode == "max":
            return self.maximum(cse, sse)
        raise ValueError(f"scSE mode must be 'add' or 'max'; got {mode!r}")

    #: names of the fused ops above (:data:`se_multi.op_table.FUSED_OPS`); the conformance suite checks each one
    FUSED_OPS: ClassVar[tuple[str, ...]] = op_table.FUSED_OPS


def _abstract_primitive(op: op_table.Op):
    """``Backend``'s abstract method for a primitive of the op table."""

    def method(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement the primitive {op.name}")

    method.__name__, method.__qualname__ = op.name, f"Backend.{op.name}"
    method.__doc__ = op.doc
    method.__signature__ = op_table.signature(op)
    return abc.abstractmethod(method)


for _name in op_table.PRIMITIVES:
    setattr(Backend, _name, _abstract_primitive(op_table.OPS[_name]))
abc.update_abstractmethods(Backend)
del _name


def _listed(names) -> str:
    ops = (op_table.OPS[n] for n in names)
    return "\n".join(f"      - :meth:`{op.name}` ``({', '.join(op.args)})``: {op.doc}" for op in ops)


if Backend.__doc__:  # None under python -OO
    Backend.__doc__ = (Backend.__doc__.replace("    {PRIMITIVES}\n", _listed(op_table.PRIMITIVES) + "\n")
                       .replace("    {FUSED}\n", _listed(op_table.FUSED_OPS) + "\n"))


class GraphBackend(Backend):
    """A backend that runs a whole model at once (ONNX Runtime, OpenVINO, TensorRT, ...).

    :meth:`run_model` (what every model call goes through) hands the bound module
    (already holding folded weights, made by :meth:`param`) and the input's shape to
    :meth:`compile`, and runs the callable it returns. The callable is kept in the bound
    module's own cache (at most ``graph_cache_size`` per model, least recently used
    first out), under :meth:`graph_key` of the input shape: an engine that compiles one
    graph for every input size returns the same key for all of them. Such a backend
    still exposes the op table: the conformance suite checks each op by compiling a
    one-op graph.
    """

    def __init__(self, dtype: str = "float32", device: str | None = None, graph_cache_size: int | None = None):
        from se_multi.cache import graph_cache_size as checked

        super().__init__(dtype, device)
        #: compiled graphs kept per bound model (see :mod:`se_multi.cache`)
        self.graph_cache_size = checked(graph_cache_size)

    @abc.abstractmethod
    def compile(self, model: Any, input_shape: tuple[int, ...]):
        """Return ``fn(x_nchw) -> output`` running the whole model for inputs of ``input_shape``
        (and of every shape with the same :meth:`graph_key`)."""

    def graph_key(self, input_shape: tuple[int, ...]) -> tuple:
        """What a compiled graph is specific to: by default everything but the batch size."""
        return tuple(input_shape[1:])

    def run_model(self, module: Any, x: Any) -> Array:
        x = self.asarray(x)
        shape = tuple(int(d) for d in x.shape)
        graph = module.graphs(self.graph_cache_size).get_or_create(
            self.graph_key(shape), lambda: self.compile(module, shape))
        return graph(x)

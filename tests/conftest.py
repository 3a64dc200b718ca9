"""Shared test helpers: which backends this machine can run, and the one way to skip for it.

The whole suite runs on every core (pytest-xdist, ``-n auto --dist loadgroup`` unless ``-n`` is
given: :func:`pytest_cmdline_main`): tests that
share a built model, a session or a file through a module- or session-scoped fixture run on one
worker (:func:`pytest_collection_modifyitems`), so each such fixture is still made once.

A test skips only for what the machine lacks (a package, a device, a dtype a backend does
not have), with the reason ``backend_status`` gives; an unknown backend name is an error,
and no error of se_multi's is ever turned into a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from se_multi.dispatch import backend_class, backend_status

#: every built-in backend that runs on a CPU (cupy needs an NVIDIA GPU)
CPU_BACKENDS = ("numpy", "torch", "mlx", "onnxruntime", "openvino")
#: every built-in backend
ALL_BACKENDS = (*CPU_BACKENDS, "cupy")


def require_backend(name: str, dtype: str | None = None) -> None:
    """Skip the calling test if backend ``name`` cannot run here (or has no ``dtype``)."""
    ok, reason = backend_status()[name]  # KeyError for a name se_multi does not know: a test bug
    if not ok:
        pytest.skip(f"backend {name!r} unavailable here: {reason}")
    if dtype is not None and dtype not in backend_class(name).dtypes:
        pytest.skip(f"backend {name!r} has no {dtype} (has {', '.join(backend_class(name).dtypes)})")


def require_native_cpu_dtype(dtype: str) -> None:
    """Skip the calling test where this CPU has no hardware for ``dtype`` (bfloat16, float16),
    saying which CPU features it lacks (:func:`se_multi.cpu.cpu_info`: detected, not assumed)."""
    from se_multi.cpu import cpu_info

    cpu = cpu_info()
    if dtype not in ("float32", "float64") and dtype not in cpu.native_reduced():
        pytest.skip(cpu.why_no(dtype))


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request) -> str:
    """Each CPU backend's name, skipped with the reason where it cannot run."""
    require_backend(request.param)
    return request.param


@pytest.fixture(params=ALL_BACKENDS)
def any_backend(request) -> str:
    """Each built-in backend's name (cupy included), skipped with the reason where it cannot run."""
    require_backend(request.param)
    return request.param


def _malloc_trim():
    """Give the C heap's free pages back to the system (glibc): a test module that built a large
    model (VGG-16's 138M parameters, SENet-154's 115M) frees it, but glibc keeps the pages, and a
    worker that runs many such modules would hold the sum of their peaks."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@pytest.fixture(scope="module", autouse=True)
def _module_memory_returned():
    """After every test module, its freed memory goes back to the system (:func:`_malloc_trim`), so
    the suite's peak is its largest module's, not the sum over a worker's modules -- except in a
    worker whose glibc keeps freed memory for reuse (:data:`WORKER_MALLOC`): there the next module's
    arrays land in it instead of in fresh pages the kernel must zero, and the worker's peak RSS
    is its largest module's all the same (7.8 GB with and without the trim; the test command
    527 s -> 509 s, system time 235 s -> 219 s, 2026-12-04).

    During the module, what was alive before it (the imported libraries, the session's fixtures:
    ~370,000 objects in a worker that has imported every backend) is frozen out of the cycle
    collector's sight (``gc.freeze``): each full collection -- the explicit ones that drop a model
    at once, and Python's own -- scanned them all, ~0.3 s a time. They are unfrozen before the
    module's closing collection, so whatever of them became garbage is collected then, as before."""
    import gc
    import os

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
    if os.environ.get("GLIBC_TUNABLES") != WORKER_MALLOC:
        _malloc_trim()


@pytest.fixture(scope="session")
def seeded_model():
    """``name -> (declaration, seeded state, the float64 NumPy reference bound to it)``: a model
    with the embedded default's weights (``create_model(name)``'s), for the tests that run every
    model on an engine against float64 (tests/test_onnx.py, tests/test_openvino_small.py). The
    last model asked for is kept, one at a time (SENet-154's state and float64 weights are ~1.4
    GB): the tests of one model share an ``xdist_group`` (``pytest_collection_modifyitems``), so
    they run one after another on one worker, and the second draws and binds nothing."""
    from se_multi.dispatch import get_backend
    from se_multi.init import recipe_state
    from se_multi.models import Model, build_model

    last = {}

    def get(name):
        if name not in last:
            last.clear()  # the previous model's arrays go before the next one's are made
            declaration = build_model(name)
            state = recipe_state((k, s.shape, s.kind) for k, s in declaration.param_specs().items())
            ops = get_backend("numpy", dtype="float64")
            last[name] = declaration, state, Model(name, declaration.bind(state, ops), ops)
        return last[name]

    return get


@pytest.fixture(scope="session")
def peer_checkpoints_folder(tmp_path_factory) -> Path:
    """Where the parity fixtures' checkpoints are written (``_parity.write_peer_checkpoint``),
    each once for the whole run: under xdist, a folder all the run's workers share (their
    temporary folders' parent, as pytest-xdist documents for data made once per run). The 14
    fixtures' checkpoints are 1.9 GB; written per worker and again per module (test_bfloat16,
    test_onnx, test_parity_mobilenet), writing them took ~4% of the workers' CPU time, as much
    again as drawing the weights (perf, 2026-12-04: fresh page-cache pages are dear on this VM)."""
    import os

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "peer_checkpoints"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def peer_checkpoint(peer_checkpoints_folder):
    """``fixture -> path`` of its checkpoint in the peer's layout, written once per run."""
    from _parity import write_peer_checkpoint

    return lambda fixture: write_peer_checkpoint(fixture, peer_checkpoints_folder)


@pytest.fixture(scope="session")
def peer_results(peer_checkpoints_folder):
    """``(fixture, backend, dtype) -> (logits, stage features or None)`` of the parity fixtures
    (``_parity.peer_runs``), each run once per test session and shared by every parity module
    (the logits tests and the one stage-feature test read the same runs)."""
    from _parity import peer_runs

    return peer_runs(peer_checkpoints_folder)


def pytest_configure(config):
    _openvino_telemetry_declined()
    if getattr(config, "workerinput", {}).get("loadgroup"):
        config.option.loadgroup = True  # pytest_configure_node


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """A worker learns that the run is distributed by ``xdist_group``. pytest-xdist's workers parse
    the controller's command line, not its options (``xdist/remote.py``), so a ``--dist loadgroup``
    that :func:`pytest_cmdline_main` chose never reached them: they added no group to the test
    ids, and the controller, which groups by those ids, ran every test on its own (2026-12-05:
    the tests of one module fixture, or one seeded model, were spread over both workers)."""
    node.workerinput["loadgroup"] = node.config.option.dist == "loadgroup"


def _openvino_telemetry_declined() -> None:
    """The tests send no usage telemetry from OpenVINO's model converter (``ov.convert_model``,
    which the NNCF int8 path calls). Unless declined, the converter posts several events per
    call, and on Linux each one forks the calling process (``openvino_telemetry``'s GA4 backend,
    ``multiprocessing``) and waits for the fork, for as long as its timeout where no network
    answers: in a test worker holding GBs, each conversion cost ~0.3 s of system time (page tables
    and copy-on-write, a 6 GB process, 2026-12-04) and up to a second of waiting, ~40 forks in the
    test command. NNCF declines its own telemetry under pytest (``nncf/telemetry/wrapper.py``);
    OpenVINO's converter declines in CI only (``CI=true``), which the tests do not claim to be
    (Hypothesis, for one, changes its settings there): its CI check answers yes instead, in this
    process only. The converter's output is the same either way."""
    try:
        from openvino_telemetry.utils.opt_in_checker import OptInChecker
    except ImportError:
        return
    OptInChecker._run_in_ci = staticmethod(lambda: True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns -n into workers
def pytest_cmdline_main(config):
    """``-n auto --dist loadgroup`` for the whole suite (``python -m pytest -q``: no paths given,
    the testpaths run) unless the command line says ``-n`` (``-n 0``: serial) or pytest-xdist is
    missing. A run of chosen files or tests stays serial unless it asks for ``-n`` (the workers'
    start-up would outweigh it); the benchmarks never read this conftest (pytest-benchmark times
    nothing under xdist)."""
    option = config.option
    if hasattr(config, "workerinput") or not hasattr(option, "numprocesses"):
        return
    if option.numprocesses is None and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        option.numprocesses = "auto"
        if option.dist == "no":
            option.dist = "loadgroup"
    # an xdist run (a serial one keeps every library's defaults): the workers start after this
    # hook and inherit its environment
    if option.numprocesses not in (None, 0, "0"):
        workers = _workers(option.numprocesses)
        _threads_per_worker(workers)
        _malloc_per_worker(workers)
        _mlx_preamble_precompiled()


#: the thread-count variables of the libraries under the backends: OpenMP (torch, oneDNN,
#: se_multi's onnxruntime and openvino defaults, :func:`se_multi.cpu.omp_threads`), OpenBLAS and
#: MKL (NumPy)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _workers(numprocesses) -> int:
    """How many workers ``-n`` starts (``auto``: one per usable core)."""
    from se_multi.cpu import usable_cores

    return usable_cores() if numprocesses in ("auto", "logical") else max(1, int(numprocesses))


def _threads_per_worker(workers: int) -> None:
    """Under xdist, each worker (and the child processes its tests start) gets its share of the
    cores as its thread count, where the environment does not set one already. Each library
    otherwise starts a thread per core in every worker: 2 workers x 2 threads on 2 cores, and
    OpenBLAS's and OpenMP's spinning threads then wait on each other (measured 2026-12-03, 2 cores,
    test_conformance + test_robustness under ``-n 2``: 295 s -> 204 s wall, 491 -> 316 s CPU). The
    workers inherit the variables (they start after this hook); a serial run (``-n 0``) keeps
    every library's own default, so multi-threaded kernels still run there."""
    import os

    from se_multi.cpu import usable_cores

    share = str(max(1, usable_cores() // workers))
    for var in THREAD_VARS:
        os.environ.setdefault(var, share)


#: the glibc tunables the workers run with (:func:`_malloc_per_worker`)
WORKER_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def _malloc_per_worker(workers: int) -> None:
    """Under xdist, glibc keeps what is freed for the next allocation instead of handing it back at
    once (``GLIBC_TUNABLES``: ``mmap_max=0``, large blocks come from the heap, not from a mapping
    of their own that ``free`` unmaps; ``trim_threshold`` 64 GiB, the heap's free top is not
    given back either), where the environment sets no tunables already. Each model the suite
    builds is copied several times over (the recipe's tensors, the folded weights, the ONNX bytes,
    OpenVINO's and oneDNN's own copies in their layouts), and on this VM a page the kernel must
    zero on its first touch (``clear_page_erms``) costs several times a reused one: it was 60% of
    the CPU time of test_onnx's and test_openvino_small's every-model tests on SENet-154 and
    VGG-16 (perf, 2026-12-04). A worker's memory stays bounded by its largest module's peak, which
    it reuses (:func:`_module_memory_returned` no longer hands it back between modules). Like the
    thread counts, the workers and their child processes inherit it; a serial run keeps glibc's
    default, and so do the child processes whose memory a test measures (:func:`default_malloc`).

    glibc's transparent huge pages (``hugetlb=1``), which these tunables held from 2026-12-03
    (the test command then 918 s -> 651 s), now cost more than they save on this machine: each
    fresh 2 MiB page is zeroed whole on first touch, whatever of it the process then uses.
    test_onnx.py's every-model tests alone, one thread, 2026-12-04: 152 s with them, 103/97 s
    without (system time 89 -> 45/41 s); a robustness child process (``tiny torch``) 10.5-12.0 s
    -> 3.7 s; the whole test command, back to back: 574 s -> 526 s (system 296 -> 233 s).
    NumPy's own huge pages for its arrays of 4 MiB and more are off too
    (``NUMPY_MADVISE_HUGEPAGE=0``): the same robustness child, interleaved, 7.3/7.4 s -> 3.9/3.9 s
    (system 3.4/3.6 -> 0.5/0.5 s); the every-model tests, whose arrays land in reused heap
    memory, 85.7 -> 84.5 s.

    Libraries hand that memory back all the same, through ``malloc_trim(0)``
    (tests/keep_freed_memory.c says which): the workers preload that file's ``malloc_trim``
    (:func:`_keep_freed_memory`), which keeps it up to a share of the machine's memory."""
    import os

    if "GLIBC_TUNABLES" not in os.environ:
        _set_for_workers("GLIBC_TUNABLES", WORKER_MALLOC)
        if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
            _set_for_workers("NUMPY_MADVISE_HUGEPAGE", "0")
        _keep_freed_memory(workers)


#: the variable listing the allocator settings :func:`_malloc_per_worker` made (names, space
#: separated): :func:`default_malloc` undoes exactly those, and leaves what the environment set
MALLOC_SETTINGS = "SE_MULTI_TEST_MALLOC_SETTINGS"


def _set_for_workers(name: str, value: str) -> None:
    """``os.environ[name] = value``, recorded in :data:`MALLOC_SETTINGS`."""
    import os

    os.environ[name] = value
    os.environ[MALLOC_SETTINGS] = " ".join((*os.environ.get(MALLOC_SETTINGS, "").split(), name))


#: the C source of the workers' ``malloc_trim`` (:func:`_keep_freed_memory`)
KEEP_FREED_MEMORY = Path(__file__).with_name("keep_freed_memory.c")


def _keep_freed_memory(workers: int) -> None:
    """Preload :data:`KEEP_FREED_MEMORY`, built with the C compiler Python was built with, into
    the workers (and their child processes), its limit a quarter of the machine's memory shared
    by the workers (``SE_MULTI_TRIM_ABOVE_MB``: 3 GB each for 2 workers on 24 GB): below it, a
    library's ``malloc_trim(0)`` keeps the worker's freed memory. The whole test command, same
    tree, back to back (2026-12-04, 2 cores, a host where each fresh huge page cost ~5 ms), with
    half the memory: 673 s -> 574 s, system time 429 -> 296 s, huge pages faulted in 86,420 ->
    37,743. Never trimming instead let both workers grow past 10 GB, and the kernel ended one for
    want of memory.

    Why a quarter, not half: this VM (Firecracker; its kernel reports free memory to the host,
    ``page_reporting_order=11``) backs only so much of its memory cheaply. A process touching 1
    GB more at a time faulted 1.1-1.4 us a page while the VM used under ~9-12 GB, 26-34 us
    beyond (2026-12-05; where the cliff lies moved with the host's state). The workers kept up
    to 6 GB each, so the run's last minutes, when both build the largest models at once, ran
    beyond it (anonymous memory 13.0-13.3 GB, system time up to half the CPU). Back to back,
    half -> a quarter -> an eighth -> half -> a quarter: 403 / 388 / 391 / 392 / 378 s, system
    time 125 / 98 / 125 / 122 / 87 s, anonymous memory at most 13.3 / 10.3 / 11.1 / 13.0 / 10.2
    GB (an eighth trims so often that the freed memory is faulted in again). Where no compiler
    runs, or the environment preloads something already, the workers keep glibc's."""
    import atexit
    import os
    import shlex
    import shutil
    import subprocess
    import sysconfig
    import tempfile

    if os.environ.get("LD_PRELOAD") or "SE_MULTI_TRIM_ABOVE_MB" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="se_multi-tests-")
    atexit.register(shutil.rmtree, folder, True)  # after the workers: this process outlives them
    library = os.path.join(folder, "keep_freed_memory.so")
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    try:
        subprocess.run([*compiler, "-O2", "-shared", "-fPIC", "-o", library, str(KEEP_FREED_MEMORY)],
                       check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return  # no working C compiler: glibc's own malloc_trim
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    _set_for_workers("LD_PRELOAD", library)
    _set_for_workers("SE_MULTI_TRIM_ABOVE_MB", str(memory // (4 * workers) // 2**20))


#: the header every MLX CPU kernel's source includes first, and the flags MLX builds each kernel
#: with (mlx 0.32, ``mlx/backend/cpu/compiled.cpp``: ``g++ <FLAGS> -shared -I <mlx/include> src``)
MLX_PREAMBLE = "mlx/backend/cpu/compiled_preamble.h"
MLX_KERNEL_FLAGS = ("-std=c++17", "-O3", "-Wall", "-fPIC")


def _mlx_preamble_precompiled() -> None:
    """Under xdist, :data:`MLX_PREAMBLE` precompiled, in the background, where the g++ builds of
    MLX's fused CPU kernels find it. On Linux MLX writes each kernel (one per fused graph, dtype
    and size: ~160 in the test command) as C++ into its cache, ``$TMPDIR/mlx/<version>/cpu``, and
    builds it with g++; parsing that one header is 0.4 s of a build's 0.5 s. GCC takes
    ``<header>.gch`` in place of a header it finds beside it, and looks a quoted include up in the
    source's own folder first: precompiled with the same flags into
    ``<cache>/mlx/backend/cpu/``, the header serves every build. The kernels are the same bytes
    (``cmp``, 2026-12-04); where the flags or the compiler differ, GCC ignores the file and parses
    the header as before. Four models' kernels built from an empty cache, one process: 12.4 s ->
    4.2 s (2026-12-04, 2 cores). Kept in the cache afterwards, like the kernels it speeds up."""
    import atexit
    import importlib.metadata
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import threading

    spec = importlib.util.find_spec("mlx")
    gxx = shutil.which("g++")
    if not sys.platform.startswith("linux") or spec is None or gxx is None:
        return
    include = next((Path(p) / "include" for p in spec.submodule_search_locations
                    if (Path(p) / "include" / MLX_PREAMBLE).is_file()), None)
    if include is None:
        return
    header = include / MLX_PREAMBLE
    built = Path(tempfile.gettempdir(), "mlx", importlib.metadata.version("mlx"), "cpu", MLX_PREAMBLE + ".gch")
    if built.is_file() and built.stat().st_mtime >= header.stat().st_mtime:
        return

    def build():
        built.parent.mkdir(parents=True, exist_ok=True)
        partial = built.with_name(f"{built.name}.{os.getpid()}")
        try:
            done = subprocess.run([gxx, *MLX_KERNEL_FLAGS, "-I", str(include), "-x", "c++-header", str(header),
                                   "-o", str(partial)], capture_output=True, timeout=300).returncode == 0
            if done:
                os.replace(partial, built)  # a kernel build never reads half a file
        except (OSError, subprocess.SubprocessError):
            pass  # no precompiled header: each build parses the header, as without this
        finally:
            partial.unlink(missing_ok=True)

    thread = threading.Thread(target=build, name="mlx-preamble", daemon=True)
    thread.start()
    atexit.register(thread.join)  # a short run never leaves the compiler writing behind it


@pytest.fixture
def default_malloc(monkeypatch):
    """glibc's default allocator for the child processes whose memory a test measures (their RSS,
    its peak, its growth): under :data:`WORKER_MALLOC` and the preloaded ``malloc_trim``
    (:func:`_keep_freed_memory`) freed memory stays resident, and what is measured would be
    the allocator's keeping, not the program's. (Under the huge pages it held on 2026-12-03,
    resident memory grew in 2 MiB steps: two runs of ``bench``'s memory pass on SE-MobileNet
    measured a forward of 53.2 and 46.1 MiB, further apart than the 10% that test holds the
    measurement to.) What the environment set itself is left alone: only the settings
    :data:`MALLOC_SETTINGS` lists are undone."""
    import os

    for name in os.environ.get(MALLOC_SETTINGS, "").split():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(MALLOC_SETTINGS, raising=False)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """An ``xdist_group`` for each test that shares state with others through a fixture of a
    wider scope than the test, so that under ``--dist loadgroup`` the fixture is made on one
    worker only: the parity tests of one fixture (``peer_results``' runs are per fixture: the
    groups spread the fixtures over the workers), and the tests of a module that has a
    module-scoped fixture. A test that names its own group keeps it (``ray``: one Ray cluster at
    a time)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {name: fdefs[-1].scope for name, fdefs in (defs.name2fixturedefs.items() if defs else ())
                  if fdefs}
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "peer_results" in scopes and "fixture" in params:
            item.add_marker(pytest.mark.xdist_group(f"parity:{params['fixture']}"))
        elif "seeded_model" in scopes and "name" in params:
            item.add_marker(pytest.mark.xdist_group(f"model:{params['name']}"))
        elif any(scope == "module" for scope in scopes.values()):
            item.add_marker(pytest.mark.xdist_group(f"module:{item.module.__name__}"))

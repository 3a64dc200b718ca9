"""What this machine's CPU computes natively: detected in one place, never assumed.

:func:`cpu_info` reads the CPU's feature flags (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)
and derives which reduced precisions have hardware behind them:

- **bfloat16**: x86 ``avx512_bf16`` (bfloat16 dot products: Intel Cooper Lake and later, AMD Zen 4
  and later) or ``amx_bf16`` (Intel AMX tiles, Sapphire Rapids and later); ARM ``bf16``.
  oneDNN (PyTorch's CPU convolutions) and OpenVINO's CPU plugin run bfloat16 convolutions
  natively on these; without them they emulate it through float32, slower than float32.
- **float16 matrix units**: x86 ``amx_fp16`` (Granite Rapids), or ARM's half-precision SIMD
  (``asimdhp``/``fphp``). ``avx512_fp16`` alone (Sapphire Rapids) is *not* counted: measured on
  this project's machine (2026-11-24, Xeon with avx512_fp16 and AMX-BF16, no AMX-FP16), a
  float16 3x3 convolution in PyTorch 2.13 took 15.0 ms against 9.0 ms in float32 (1.19 ms in
  bfloat16), and OpenVINO 2026.4 ran SE-ResNet-50 in float16 at 1.35x its float32 time.
- **int8** (the ``int8`` dtype of ``openvino`` and ``onnxruntime``: post-training quantized
  models, :mod:`se_multi.quantize`): x86 ``avx512_vnni`` or ``avx_vnni`` (int8 dot products into
  int32: Intel Cascade Lake / Alder Lake and later, AMD Zen 4 and later) or ``amx_int8`` (AMX
  tiles); ARM ``asimddp`` (SDOT) or ``i8mm``. Without them oneDNN and MLAS emulate int8 dot
  products with 16-bit multiplies and gain little over float32.

:func:`framework_reports` adds what the installed frameworks say about the same CPU (OpenVINO's
``OPTIMIZATION_CAPABILITIES``, PyTorch's ``get_cpu_capability()``, numpy's BLAS and its kernel
through threadpoolctl); it imports them, so only commands call it (``se-multi backends``,
``se-multi bench``), never ``import se_multi``.

:func:`usable_cores` is how many cores this process may run on, and :func:`omp_threads` the
thread count ``OMP_NUM_THREADS`` asks for, at most that: every thread count se_multi picks by
default comes from these two.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuInfo:
    name: str
    machine: str
    flags: frozenset

    @property
    def x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "i386")

    @property
    def arm(self) -> bool:
        return self.machine.lower() in ("aarch64", "arm64")

    @property
    def bf16(self) -> bool:
        """bfloat16 arithmetic in hardware (see the module docstring)."""
        if self.x86:
            return bool({"avx512_bf16", "amx_bf16"} & self.flags)
        return self.arm and "bf16" in self.flags

    @property
    def fp16(self) -> bool:
        """float16 matrix arithmetic in hardware that beats float32 (see the module docstring)."""
        if self.x86:
            return "amx_fp16" in self.flags
        return self.arm and bool({"asimdhp", "fphp"} & self.flags)

    @property
    def int8(self) -> bool:
        """int8 dot products in hardware (see the module docstring)."""
        if self.x86:
            return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)
        return self.arm and bool({"asimddp", "i8mm"} & self.flags)

    def native_reduced(self) -> tuple[str, ...]:
        """The reduced-precision dtypes this CPU has hardware for."""
        return tuple(d for d, ok in (("bfloat16", self.bf16), ("float16", self.fp16), ("int8", self.int8)) if ok)

    def isa(self) -> str:
        """A short summary of the vector and matrix extensions that matter here."""
        if self.x86:
            shown = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                     "amx_fp16", "amx_int8")
        else:
            shown = ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sme")
        return " ".join(f for f in shown if f in self.flags) or "no SIMD extensions reported"

    def why_no(self, dtype: str) -> str:
        """Why ``dtype`` has no hardware here (a skip reason, an error message)."""
        need = {"bfloat16": "avx512_bf16 or amx_bf16 (x86), bf16 (ARM)",
                "float16": "amx_fp16 (x86), asimdhp (ARM)",
                "int8": "avx512_vnni, avx_vnni or amx_int8 (x86), asimddp or i8mm (ARM)"}.get(dtype, "?")
        return f"this CPU ({self.name}; {self.isa()}) has no native {dtype}: that needs {need}"


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """The CPU's name, architecture and feature flags (cached: they do not change)."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:  # x86, ARM: the first processor's
                    flags = set(value.split())
    except OSError:  # not Linux: no flags to read
        pass
    return CpuInfo(name or platform.processor() or "unknown CPU", platform.machine() or os.uname().machine, frozenset(flags))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a cgroup cpuset, a
    container's or a scheduler's placement), which can be fewer than the machine has
    (``os.cpu_count()``). Read on every call: a process's affinity can change while it runs."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API, every core is usable
        return os.cpu_count() or 1


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive int, at most :func:`usable_cores`; else None.

    torch and OpenBLAS already follow it, and Ray sets it in each worker to that worker's CPU
    share (1 for a fractional actor): an engine that ignored it would run 2 threads per actor on
    a 2-core machine, two actors 4 spinning threads on 2 cores (measured 2026-11-24: ``predict
    --ray --workers 2`` 3x slower than one process). It is clamped because a value set for a
    bigger machine (``OMP_NUM_THREADS=64`` in a shell profile, a job script) would otherwise
    run 64 spinning threads on the cores this process has: ONNX Runtime, 4 images on 2 cores,
    3.1 s -> 26.3 s (issue 21). A thread count passed explicitly (a backend's ``threads=``) is
    the caller's choice and is not clamped."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return min(n, usable_cores()) if n > 0 else None


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def blas_info() -> list[dict]:
    """numpy's BLAS libraries as threadpoolctl sees them: library, version, kernel
    (``architecture``: OpenBLAS's core type, which ``OPENBLAS_CORETYPE`` overrides), threads.
    Empty when threadpoolctl is not installed."""
    if not _module("threadpoolctl"):
        return []
    import numpy  # noqa: F401  (load numpy's BLAS before asking)
    import threadpoolctl

    return [{"library": i.get("internal_api"), "version": i.get("version"), "kernel": i.get("architecture"),
             "threads": i.get("num_threads"), "coretype_env": os.environ.get("OPENBLAS_CORETYPE")}
            for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]


def describe_blas() -> str:
    """One line: numpy's BLAS and the kernel in use, e.g. ``openblas 0.3.30, kernel Haswell (forced by
    OPENBLAS_CORETYPE=Haswell), 2 threads``."""
    info = blas_info()
    if not info:
        return "BLAS unknown (pip install threadpoolctl to see it)"
    parts = []
    for i in info:
        forced = f" (forced by OPENBLAS_CORETYPE={i['coretype_env']})" if i["coretype_env"] and i["library"] == "openblas" else ""
        parts.append(f"{i['library']} {i['version']}, kernel {i['kernel'] or '?'}{forced}, {i['threads']} threads")
    return "; ".join(parts)


def framework_reports() -> dict[str, str]:
    """What each installed framework reports about this CPU (imports them)."""
    out = {}
    if _module("openvino"):
        try:
            import openvino

            caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            out["openvino"] = "OPTIMIZATION_CAPABILITIES " + " ".join(caps)
        except Exception as exc:  # a broken install must not break a report
            out["openvino"] = f"no CPU report ({type(exc).__name__})"
    if _module("torch"):
        try:
            import torch

            out["torch"] = (f"get_cpu_capability {torch.backends.cpu.get_cpu_capability()}, "
                            f"oneDNN {'yes' if torch.backends.mkldnn.is_available() else 'no'}")
        except Exception as exc:
            out["torch"] = f"no CPU report ({type(exc).__name__})"
    out["numpy"] = describe_blas()
    return out

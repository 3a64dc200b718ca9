"""``se-multi backends``: every known backend, whether it can run here, and which dtypes run natively fast."""

from __future__ import annotations

from se_multi.dispatch import backend_class, backend_status, resolve_backend_name


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from se_multi.cpu import cpu_info, framework_reports

    status = backend_status()
    width = max(map(len, status))
    for name, (ok, reason) in status.items():
        native = ""
        if ok:
            try:
                native = f"  (native here: {', '.join(backend_class(name).native_dtypes())})"
            except Exception:  # a plugin's own method must not break the listing
                native = ""
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {reason}{native}")
    print(f"auto -> {resolve_backend_name('auto')}")
    cpu = cpu_info()
    reduced = ", ".join(cpu.native_reduced()) or "none"
    print(f"CPU: {cpu.name} ({cpu.machine}; {cpu.isa()}); native reduced precision: {reduced}")
    for framework, report in framework_reports().items():
        label = "numpy BLAS" if framework == "numpy" else framework
        print(f"  {label}: {report}")
    return 0

"""``se-multi backends``: every known backend and whether it can run here."""

from __future__ import annotations

from se_multi.dispatch import backend_status, resolve_backend_name


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    status = backend_status()
    width = max(map(len, status))
    for name, (ok, reason) in status.items():
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {reason}")
    print(f"auto -> {resolve_backend_name('auto')}")
    return 0

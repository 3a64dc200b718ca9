"""Backend adapters, installed as ``se_multi.backends`` (one module per array library).

Each module holds one :class:`se_multi.backend.Backend` subclass and imports its
framework only when the backend is instantiated. The registry that maps names to
these classes is ``se_multi.dispatch.BUILTIN_BACKENDS``.
"""

"""Reading checkpoints and mapping peer key layouts onto the native one.

Formats: ``.safetensors`` (no torch needed), ``.npz``, ``.pth``/``.pt``/``.bin`` (needs
torch; ``torch.load(weights_only=True)``, never unpickling arbitrary objects); or a hub id
(:mod:`se_multi.hub`). What a checkpoint holds is checked when it is bound
(:func:`se_multi.nn.check_state`): keys, shapes, dtypes, finiteness, BatchNorm variances.

The zip-based formats (``.npz``; torch's ``.pth``/``.pt``/``.bin``) are checked before anything
in them is inflated, because their size on disk says nothing about what they inflate to (a 3 MB
``.npz`` holding a 3 GiB array of zeros took 18.7 s and 3.1 GB of memory before the key check
refused it): what the members declare in the zip's directory is held to :data:`MAX_INFLATED_BYTES`;
a ``.npz`` read for a model (:func:`se_multi.models.loading.load_declared`) then has each member's ``.npy`` header read
(the first bytes of the member, not its data), its keys, shapes and dtypes checked against the
model by :func:`se_multi.nn.check_state` as if they were the tensors, and its declared size held
to what those tensors take plus :data:`NPZ_SLACK_BYTES`.

This module reads files and knows no model: reading a checkpoint *for a model* (layout
detection, the declaration it implies) is :mod:`se_multi.models.loading`, one floor up, which
gives :func:`to_native` the converters the model's family registered
(:func:`se_multi.models.register_model`).

Layouts: a converter looks at the keys of a state dict and either declines (returns ``None``) or
returns ``(native_state, options)``, where ``options`` are builder keywords the layout implies
(e.g. torchvision's BatchNorm ``eps=1e-3``).
"""

from __future__ import annotations

import os
import zipfile
from typing import Callable, Iterable

import numpy as np

Converter = Callable[[dict], "tuple[dict, dict] | None"]


def to_native(state: dict, layouts: Iterable[tuple[str, Converter]]) -> tuple[dict, dict, str]:
    """``(native_state, builder_options, layout_name)``: ``state`` (its ``module.`` prefix, which
    DataParallel adds, removed) read by the first of ``layouts`` (``(name, converter)`` pairs, tried
    in order) whose converter accepts it; as it is, layout ``"native"``, when none does."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for layout, converter in layouts:
        out = converter(state)
        if out is not None:
            native, options = out
            return native, options, layout
    return state, {}, "native"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


#: The most a zip-based checkpoint may declare it inflates to (the sum of its members' uncompressed
#: sizes in the zip's directory), for any model. The largest registered model, SENet-154 (115 M
#: parameters), takes 0.46 GB in float32; a training checkpoint of it holding the weights, Adam's
#: two moments and an EMA copy in float64 takes 3.7 GB. A file declaring more is no checkpoint of
#: a model here, and is refused before anything in it is inflated.
MAX_INFLATED_BYTES = 4 * 2**30
#: What a ``.npz`` read for a model may declare beyond the model's own tensors (at the shapes the
#: model declares, in the file's dtypes): the ``.npy`` headers (~128 bytes a tensor) and training
#: counters (``num_batches_tracked``, 8 bytes each), which the key check lets through.
NPZ_SLACK_BYTES = 16 * 2**20

#: ``.npy`` format version -> the numpy function that reads its header (and only its header)
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _check_inflated(path: str, members: list[zipfile.ZipInfo], limit: int, why: str) -> None:
    """Refuse a zip whose members declare more than ``limit`` bytes uncompressed, naming the largest."""
    total = sum(m.file_size for m in members)
    if total > limit:
        largest = max(members, key=lambda m: m.file_size)
        raise CheckpointError(
            f"{path}: its members declare {_size(total)} uncompressed ({largest.filename!r} alone "
            f"{_size(largest.file_size)}), over the limit of {_size(limit)} ({why}); refused before inflating anything")


def _npz_headers(path: str, zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """``{key: stand-in}`` from each member's ``.npy`` header: a read-only zero-stride array with the
    tensor's shape and dtype, which costs no memory, so that layouts and key checks run on it as on
    the tensor (keys as ``np.load`` names them: the member name without ``.npy``)."""
    out = {}
    for member in zf.infolist():
        with zf.open(member) as f:  # inflates the header's few bytes, not the data after it
            try:
                version = np.lib.format.read_magic(f)
                read_header = _NPY_HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f".npy format version {version} (se_multi reads 1.0 and 2.0)")
                shape, _, dtype = read_header(f)
            except ValueError as exc:  # not a .npy member, or a header numpy cannot parse
                raise CheckpointError(f"{path}: member {member.filename!r} is not a .npy array ({exc})") from None
        if dtype.hasobject:  # np.load(allow_pickle=False) would refuse it, after inflating it
            raise CheckpointError(f"{path}: member {member.filename!r} holds Python objects ({dtype}), not numbers")
        out[member.filename.removesuffix(".npy")] = np.broadcast_to(np.zeros((), dtype), shape)
    return out


def _reading(path: str, read: Callable[[], object]):
    """``read()``, with any error of the file's reader as one :class:`CheckpointError` naming the file."""
    try:
        return read()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def _zip_members(path: str, read_npy_headers: bool = False):
    """The zip's members (held to :data:`MAX_INFLATED_BYTES`), and with ``read_npy_headers`` the
    stand-ins of :func:`_npz_headers`."""
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        _check_inflated(path, members, MAX_INFLATED_BYTES,
                        "se_multi.checkpoint.MAX_INFLATED_BYTES, the most it inflates from any checkpoint")
        return members, _npz_headers(path, zf) if read_npy_headers else None


def _read_npz(path: str, expect: Callable[[dict], int] | None) -> dict[str, np.ndarray]:
    members, stand_ins = _reading(path, lambda: _zip_members(path, read_npy_headers=expect is not None))
    if expect is not None:  # outside _reading: a model's own errors are not a file's
        need = expect(stand_ins)
        _check_inflated(path, members, need + NPZ_SLACK_BYTES,
                        f"this model's tensors, {_size(need)}, plus se_multi.checkpoint.NPZ_SLACK_BYTES, "
                        f"{_size(NPZ_SLACK_BYTES)}")

    def load():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    return _reading(path, load)


def _read_torch(path: str, ext: str) -> dict[str, np.ndarray]:
    if zipfile.is_zipfile(path):  # torch.save's format since torch 1.6: archive/data.pkl, archive/data/N
        # the absolute cap only: a torch checkpoint may carry optimizer state beside the weights,
        # so the model's own size does not bound it (checked before torch is even imported)
        _reading(path, lambda: _zip_members(path))
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading {ext} checkpoints needs torch (pip install 'se-multi[torch]'); "
                              "or convert it to .safetensors") from None
    obj = _reading(path, lambda: torch.load(path, map_location="cpu", weights_only=True))
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in obj.items()
            if hasattr(v, "numpy")}


def read_state_dict(path: str, expect: Callable[[dict], int] | None = None) -> dict[str, np.ndarray]:
    """A checkpoint file -> ``{key: NumPy array}``.

    A zip-based file is first held to :data:`MAX_INFLATED_BYTES` from its directory. For a
    ``.npz``, ``expect`` (when given) is called with the file's tensors as stand-ins read from
    their headers (:func:`_npz_headers`) before any tensor is read: it raises if they do not fit
    the model, else returns the bytes the model's tensors take, which with
    :data:`NPZ_SLACK_BYTES` bounds what the file may declare."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":  # not compressed: what it holds is what is on disk
        from safetensors.numpy import load_file

        return _reading(path, lambda: dict(load_file(path)))
    if ext == ".npz":
        return _read_npz(path, expect)
    if ext in (".pth", ".pt", ".bin"):
        return _read_torch(path, ext)
    raise CheckpointError(f"{path}: unknown checkpoint format {ext!r}; expected .safetensors, .npz, .pth or .pt")


def resolve_weights(weights) -> str:
    """A local path (it always wins), or a hub id resolved through :mod:`se_multi.hub`."""
    from se_multi import hub

    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a checkpoint path or a hub id (str); got {type(weights).__name__}")
    path = os.fspath(weights)
    if os.path.exists(path):
        return path
    repo_id = hub.parse_hub_id(path)
    if repo_id is None:
        raise CheckpointError(f"checkpoint not found: {path}")
    return hub.resolve(repo_id)

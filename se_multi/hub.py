"""Weights by Hugging Face hub id, as timm spells them, through ``huggingface_hub``.

Accepted ids: ``org/name``, ``org/name.tag`` (timm's repos are named after the pretrained tag:
``timm/seresnet50.a1_in1k``) and ``hf-hub:org/name[.tag]``. A path that exists locally always
wins over an id; a string ending in a checkpoint extension is always a path.

Resolution: ``model.safetensors`` first, then ``pytorch_model.bin`` (read with
``torch.load(weights_only=True)``), from the local hub cache when it has them, else downloaded.
The cache is huggingface_hub's own (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``), and ``HF_HUB_OFFLINE=1`` forbids the network; both are read at
call time. Before any download the hub's host is probed with a short connection timeout, so an
id that is neither cached nor reachable fails in seconds with one error saying so (huggingface_hub
itself retries a failed lookup for ~25 s).
"""

from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

HUB_PREFIX = "hf-hub:"
#: what a checkpoint path ends with; such a string is never taken for a hub id
CHECKPOINT_EXTENSIONS = (".safetensors", ".npz", ".pth", ".pt", ".bin")
#: files tried in a model repo, in order
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: seconds to wait for the hub's host before giving up on a download
PROBE_TIMEOUT_S = 3.0

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class HubError(ValueError):
    """A hub id that cannot be resolved to a local file."""


def parse_hub_id(weights: str) -> str | None:
    """The repo id ``weights`` names, or ``None`` if it is not a hub id (then it is a path).
    ``hf-hub:`` forces the reading as an id, and an id after it must be well formed."""
    text = os.fspath(weights)
    if text.startswith(HUB_PREFIX):
        repo_id = text[len(HUB_PREFIX):]
        if not _REPO_ID.fullmatch(repo_id):
            raise HubError(f"{text!r}: expected hf-hub:org/name or hf-hub:org/name.tag")
        return repo_id
    if text.lower().endswith(CHECKPOINT_EXTENSIONS) or not _REPO_ID.fullmatch(text):
        return None
    return text


def cache_dir() -> str:
    """huggingface_hub's cache directory, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(home, "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` if a TCP connection to the endpoint opens within ``timeout``, else why not."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.strerror or exc})"


def resolve(repo_id: str) -> str:
    """The local path of ``repo_id``'s weights, from the cache or downloaded (see the module docstring)."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise HubError(f"{repo_id!r} is a hub id; resolving it needs huggingface_hub: "
                       "pip install 'se-multi[hub]'") from None
    cache = cache_dir()
    for filename in WEIGHT_FILES:
        try:
            return huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=True)
        except (LocalEntryNotFoundError, EntryNotFoundError):
            continue
    if offline():
        raise HubError(f"{repo_id!r} is not in the local hub cache ({cache}: none of {', '.join(WEIGHT_FILES)}) "
                       "and HF_HUB_OFFLINE is set; download it once online, or pass a checkpoint path")
    unreachable = _probe(_endpoint())
    if unreachable:
        raise HubError(f"{repo_id!r} is not in the local hub cache ({cache}) and the hub cannot be reached: "
                       f"{unreachable}; pass a checkpoint path, or check the network")
    for filename in WEIGHT_FILES:
        try:
            return huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=cache)
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError:
            raise HubError(f"{repo_id!r}: no such model repository on the hub (or it is private)") from None
        except Exception as exc:  # network failures mid-download, HTTP errors
            raise HubError(f"{repo_id!r}: download failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    raise HubError(f"{repo_id!r} has none of {', '.join(WEIGHT_FILES)}: not a timm-style weights repository")

"""The machine a study runs on: offline or not, cache folder, device, dtype, versions."""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# The hub clients wait 10 s per request and retry on timeouts; a study's checks should
# learn that a network is dead in seconds, not minutes.
HUB_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10"}
PROBE_TIMEOUT = 3.0


def cache_dir() -> Path:
    """lawlab's own cache (converted GGUF models, assembled packs, offline task files,
    learned PruneNet policies). ``LAWLAB_CACHE`` overrides ``~/.cache/lawlab``."""
    root = os.environ.get("LAWLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lawlab"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _falsy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"0", "false", "no", "off"}


def hub_endpoint() -> str:
    """The hub the clients talk to: ``HF_ENDPOINT`` (a mirror) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_only() -> bool:
    """``HF_HUB_OFFLINE=1`` (or its transformers/datasets twins): the clients read their
    cache and never open a connection."""
    return any(_truthy(os.environ.get(v)) for v in _OFFLINE_VARS)


def bound_hub_timeouts() -> None:
    """Short client timeouts, unless the user set their own. The clients read these when
    huggingface_hub is first imported, so call this before that."""
    for var, value in HUB_TIMEOUTS.items():
        os.environ.setdefault(var, value)


@functools.cache
def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the hub endpoint answers one short HTTP request, sent with the hub client's
    own HTTP session: the same ``HF_ENDPOINT``, proxies (``HTTPS_PROXY``, ``NO_PROXY``) and
    certificates as every later download. Any answer below 500 counts (a proxy that
    cannot reach the hub answers 502-504)."""
    bound_hub_timeouts()
    try:
        from huggingface_hub.utils import get_session

        response = get_session().head(f"{hub_endpoint()}/api/models", timeout=timeout)
    except Exception:  # refused, timed out, DNS, TLS, a proxy that hangs up: not reachable
        return False
    return response.status_code < 500


def is_offline(setting: str = "auto") -> bool:
    """Whether this run must do without the hub (reading only its cache).

    ``setting`` is ``[execution] offline``: "yes"/"no" decide. For "auto",
    ``LAWLAB_OFFLINE=1``/``0`` decides, then ``HF_HUB_OFFLINE=1`` means the cache only,
    and otherwise one bounded request to the endpoint decides (once per process)."""
    if setting == "yes":
        return True
    if setting == "no":
        return False
    lawlab_offline = os.environ.get("LAWLAB_OFFLINE")
    if _truthy(lawlab_offline):
        return True
    if _falsy(lawlab_offline):
        return False
    if hub_cache_only():
        return True
    return not hub_reachable()


def enter_offline_mode() -> None:
    """Make every HF library read its cache and fail fast instead of waiting on a network
    that never answers. The cache stays the user's (``HF_HOME``): that is where
    ``lawlab fetch`` put the files."""
    for var in _OFFLINE_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def missing_device(device: str) -> str | None:
    """Why this machine cannot run on ``device`` ("cuda", "cuda:1", "mps"), or None."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if device == "mps":
        ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        return None if ok else "the spec asks for device 'mps', and this machine has no Apple GPU"
    if not torch.cuda.is_available():
        return f"the spec asks for device {device!r}, and this machine has no CUDA GPU"
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return f"the spec asks for device {device!r}, and this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    return None


def quiet_libraries() -> None:
    """Silence the progress bars and chatter of tqdm, torch, transformers, datasets and lm-eval."""
    import logging

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_import_chatter()


def quiet_import_chatter() -> None:
    """Silence what libraries say about themselves on import (torchao's deprecation notices
    through torch's pytree logger), which is about no study. torch sets its own root logger's
    level when imported, so the pytree logger is named."""
    import logging

    for name in ("torch.utils._pytree", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


def resolve_device(setting: str = "auto") -> str:
    import torch

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_dtype(setting: str, device: str) -> str:
    if setting != "auto":
        return setting
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


LIBRARIES = ("lawlab", "torch", "transformers", "peft", "lm_eval", "lmfit", "accelerate", "datasets", "numpy")


@functools.cache
def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            try:
                out[name] = md.version(name)
            except md.PackageNotFoundError:
                out[name] = None
    return out


def machine() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }

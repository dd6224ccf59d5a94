"""The machine a study runs on: offline or not, cache folder, device, dtype, versions."""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import socket
from pathlib import Path
from typing import Any

HUB_HOST = "huggingface.co"
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


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


@functools.cache
def hub_reachable(timeout: float = 1.5) -> bool:
    """One TCP connection attempt to the hub; a closed network answers at once."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_offline(setting: str = "auto") -> bool:
    if setting == "yes":
        return True
    if setting == "no":
        return False
    if _truthy(os.environ.get("LAWLAB_OFFLINE")) or any(_truthy(os.environ.get(v)) for v in _OFFLINE_VARS):
        return True
    return not hub_reachable()


def enter_offline_mode() -> None:
    """Make every HF library fail fast instead of waiting on a network that never answers."""
    for var in _OFFLINE_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("HF_HOME", str(cache_dir() / "hf"))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def quiet_libraries() -> None:
    """Silence the progress bars and chatter of tqdm, transformers, datasets and lm-eval."""
    import logging

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "peft"):
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

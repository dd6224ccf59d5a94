"""Models on disk and in memory: loading, hashing, GGUF conversion, and placement.

Loading an ordinary HF folder onto the run's device and dtype; hashing weight files
(cached by path, size and mtime, so validating a spec twice does not read gigabytes
twice); turning a GGUF file into a cached HF folder once, because transformers needs one
to three minutes to dequantise a GGUF and convert its tokenizer; and the memory plan's
placement rules (:class:`Residency`): which model is on the device, which wait on the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import struct
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lawlab.api import LoadedModel, RunContext
from lawlab.files import write_json

GGUF_MAGIC = b"GGUF"
CONVERSION_RECORD = "lawlab-gguf.json"


def replace_module(root: Any, old: Any, new: Any) -> None:
    """Put ``new`` where ``old`` sits inside ``root``: architecture adapters hand pruners
    modules, not their attribute names."""
    for _, parent in root.named_modules():
        for child_name, child in parent.named_children():
            if child is old:
                setattr(parent, child_name, new)
                return
    raise ValueError(f"module {old!r} not found in the model")


# --------------------------------------------------------------------------- hashing


def _hash_index_path() -> Path:
    from lawlab.environment import cache_dir

    return cache_dir() / "file-hashes.json"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered by (absolute path, size, mtime) in lawlab's cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    index_path = _hash_index_path()
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key in index:
        return index[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    index[key] = digest.hexdigest()
    write_json(index_path, index, indent=1, sort_keys=True)
    return index[key]


def folder_sha256(path: str | Path) -> dict[str, str]:
    """sha256 of each regular, non-hidden file at the top of a folder (weights, config,
    tokenizer), by name; subfolders (old checkpoints, say) are not part of the model."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and not p.name.startswith("."))
    return {p.name: file_sha256(p) for p in files}


def combined_sha256(hashes: dict[str, str]) -> str:
    """One digest for a folder: the sha256 of its sorted ``name  sha256`` lines."""
    lines = "".join(f"{name}  {h}\n" for name, h in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()




# --------------------------------------------------------------------------- HF folders


def read_config(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())


def clean_config(config: Any) -> None:
    """Drop what a GGUF load leaves in a config that makes it unsavable and misleading:
    the weights are plain float tensors once dequantised."""
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    for sub in ("text_config",):
        if hasattr(config, sub):
            clean_config(getattr(config, sub))


def load_hf_folder(path: str | Path, ctx: RunContext, provenance: dict[str, Any] | None = None) -> LoadedModel:
    """An HF folder (safetensors + tokenizer) as a :class:`LoadedModel` on ``ctx.device``
    in ``ctx.dtype``, in eval mode. Remote code is never run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=ctx.torch_dtype(), use_safetensors=True)
    # transformers wraps PreTrainedModel.to in functools.wraps(nn.Module.to), whose type keeps the unbound self
    model.to(ctx.device)  # type: ignore[arg-type]
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prov = {"path": str(path), "dtype": ctx.dtype, "device": ctx.device, **(provenance or {})}
    return LoadedModel(model=model, tokenizer=tokenizer, model_type=model.config.model_type, provenance=prov)


# --------------------------------------------------------------------------- GGUF


def is_gguf(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def gguf_metadata(path: str | Path, keys: tuple[str, ...] = ("general.architecture", "general.name", "general.file_type")) -> dict[str, Any]:
    """Scalar metadata of a GGUF header, read without touching the tensors (milliseconds,
    so validation can tell the architecture of a multi-GB file)."""
    try:
        return _read_header(path, set(keys))
    except (struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise ValueError(f"{path}: truncated or corrupt GGUF header ({exc})") from None


def _read_header(path: str | Path, wanted: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic bytes)")
        version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        for _ in range(n_kv):
            key = _read_str(f)
            (vtype,) = struct.unpack("<I", f.read(4))
            value = _read_value(f, vtype)
            if key in wanted:
                found[key] = value
                if len(found) == len(wanted):
                    break
    return found


# GGUF value types: fixed-size scalars by struct code, 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _read_str(f: Any) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8", errors="replace")


def _read_value(f: Any, vtype: int) -> Any:
    if vtype in _SCALARS:
        code = _SCALARS[vtype]
        return struct.unpack("<" + code, f.read(struct.calcsize(code)))[0]
    if vtype == 8:
        return _read_str(f)
    if vtype == 9:
        (item_type,) = struct.unpack("<I", f.read(4))
        (n,) = struct.unpack("<Q", f.read(8))
        if item_type in _SCALARS:  # skip the bytes, arrays (token lists) are never needed here
            f.seek(n * struct.calcsize(_SCALARS[item_type]), os.SEEK_CUR)
            return None
        for _ in range(n):
            _read_value(f, item_type)
        return None
    raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_model_type(meta: dict[str, Any]) -> str | None:
    """The ``config.model_type`` transformers gives a GGUF of this architecture
    (mirroring its renames: llama files named "mistral…" load as mistral, gemma3 as gemma3_text)."""
    arch = meta.get("general.architecture")
    if arch is None:
        return None
    if arch == "llama" and "mistral" in str(meta.get("general.name", "")).lower():
        return "mistral"
    return {"gemma3": "gemma3_text"}.get(arch, arch)


def gguf_quantisation(meta: dict[str, Any]) -> str:
    file_type = meta.get("general.file_type")
    if file_type is None:
        return "unknown"
    from gguf import LlamaFileType

    try:
        return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except ValueError:  # a file type newer than the installed gguf knows
        return f"file_type {file_type}"


def gguf_cache_folder(sha256: str, cache_dir: Path) -> Path:
    return cache_dir / "gguf" / sha256


def converted_config(path: str | Path, cache_dir: Path) -> dict[str, Any] | None:
    """The config of a GGUF file's converted folder, if it was converted already (the
    file's hash is cached, so this is cheap); None otherwise."""
    config = gguf_cache_folder(file_sha256(Path(path).resolve()), cache_dir) / "config.json"
    return read_config(config.parent) if config.is_file() else None


class _BarFilter:
    """A stderr stand-in that drops progress-bar output (tqdm's "\\r…%|…|" redraws) and
    passes everything else (a warning, an error) to the real stream."""

    def __init__(self, target: Any):
        self.target = target

    def write(self, text: str) -> int:
        if "%|" in text or "\r" in text or not text.strip():
            return len(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def library_bars_dropped() -> Iterator[None]:
    """No library progress bar reaches the terminal: tqdm (transformers' GGUF conversion
    calls it directly, so the TQDM_DISABLE it read at import cannot help) writes to
    sys.stderr, which drops them; transformers' own bars are switched off as well."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(_BarFilter(sys.stderr)):  # type: ignore[type-var]
            yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def convert_gguf(path: str | Path, cache_dir: Path, progress: Any = None) -> Path:
    """The HF folder for a GGUF file: converted once (dequantised to float32, tokenizer
    included), then found again by the file's sha256 under ``cache_dir/gguf/``."""
    path = Path(path).resolve()
    sha = file_sha256(path)
    target = gguf_cache_folder(sha, cache_dir)
    if (target / CONVERSION_RECORD).exists():
        return target

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress is not None:
        progress.log(f"converting {path.name} to an HF folder (once; takes a minute or more)")
    started = time.perf_counter()
    with library_bars_dropped():  # lawlab's own line above says what the three tqdm bars would
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        clean_config(model.config)
        if hasattr(model, "hf_quantizer"):
            # torch types nn.Module.__setattr__ for tensors and modules only; it stores any value
            model.hf_quantizer = None  # type: ignore[assignment]

        meta = gguf_metadata(path)
        tmp = target.with_name(f".{sha}.{os.getpid()}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    record = {
        "gguf_file": path.name,
        "gguf_sha256": sha,
        "gguf_bytes": path.stat().st_size,
        "quantisation": gguf_quantisation(meta),
        "architecture": meta.get("general.architecture"),
        "name": meta.get("general.name"),
        "converted_with": f"transformers {transformers.__version__}",
        "conversion_seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=1))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_gguf(path: str | Path, ctx: RunContext, provenance: dict[str, Any] | None = None) -> LoadedModel:
    """A GGUF model through its cached HF folder; provenance says it was dequantised."""
    folder = convert_gguf(path, ctx.cache_dir, ctx.progress)
    record = json.loads((folder / CONVERSION_RECORD).read_text())
    prov = {
        "gguf_sha256": record["gguf_sha256"],
        "quantisation": f"{record['quantisation']} dequantised to float32",
        "converted_folder": str(folder),
        "converted_with": record["converted_with"],
        **(provenance or {}),
    }
    return load_hf_folder(folder, ctx, prov)


# --------------------------------------------------------------------------- placement
#
# The memory plan: one working model on the device at a time (plus, for one stage, a
# model an evaluator borrows, such as the paired runtime's base); every other model the
# scheduler holds waits on the host. Copies are made from the host copy straight into
# device memory, never device to device, so a stage's device peak is one model plus what
# the stage allocates. Every move goes through the functions below, so a test can watch.

HOST = "cpu"
_observers: list[Callable[[str, Any, str], None]] = []


@contextlib.contextmanager
def watching_placements(observer: Callable[[str, Any, str], None]) -> Iterator[None]:
    """Call ``observer(event, module, device)`` on every move lawlab makes while inside:
    ``"to_device"``, ``"to_host"``, or ``"copy"`` (a new module made on the device from a
    host one)."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def _notify(event: str, module: Any, device: str) -> None:
    for observer in list(_observers):
        observer(event, module, device)


def to_device(module: Any, device: str) -> Any:
    module.to(device)
    _notify("to_device", module, device)
    return module


def to_host(module: Any) -> Any:
    module.to(HOST)
    _notify("to_host", module, HOST)
    return module


def copy_to_device(module: Any, device: str) -> Any:
    """A deep copy of a module that lives on the host, its tensors written straight to
    ``device`` (one device copy; no second host copy). Tied weights stay tied."""
    import copy

    import torch

    memo: dict[int, Any] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        if id(t) in memo:
            continue
        if t.device.type != HOST:
            raise RuntimeError(f"copy_to_device copies from the host; a tensor is on {t.device}")
        new = t.detach().to(device, copy=True)
        memo[id(t)] = torch.nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else new
    out = copy.deepcopy(module, memo)
    _notify("copy", out, device)
    return out


class Residency:
    """Which model is the working one on the device; moves the others to the host.

    Models are referred to weakly: a model the scheduler drops is gone from here too.
    """

    def __init__(self, device: str):
        self.device = device
        self._resident: weakref.ref[LoadedModel] | None = None
        self._guests: list[weakref.ref[LoadedModel]] = []

    @property
    def resident(self) -> LoadedModel | None:
        return self._resident() if self._resident is not None else None

    def evict(self) -> None:
        """Move the working model and any borrowed one to the host."""
        for model in [self.resident, *self._live_guests()]:
            if model is not None:
                to_host(model.model)
        self._resident, self._guests = None, []

    def working(self, model: LoadedModel) -> LoadedModel:
        """Make ``model`` (held on the host, or already here) the working model."""
        if self.resident is not model:
            self.evict()
            to_device(model.model, self.device)
            self._resident = weakref.ref(model)
        return model

    def adopt(self, model: LoadedModel) -> LoadedModel:
        """A model a stage produced (loaded, pruned, recovered) becomes the working model,
        in place of the stage's input (its working copy, which the stage consumed)."""
        to_device(model.model, self.device)
        self._resident = weakref.ref(model)
        return model

    def working_copy(self, model: LoadedModel) -> LoadedModel:
        """A copy of ``model`` for a stage to change, on the device; ``model`` itself ends
        on the host (the copy is made from there, never device to device)."""
        self.evict()
        to_host(model.model)  # a model the scheduler gave without this object placing it
        copy = LoadedModel(
            model=copy_to_device(model.model, self.device),
            tokenizer=model.tokenizer,
            model_type=model.model_type,
            provenance=dict(model.provenance),
            compression=model.compression,
            format=model.format,
            history=list(model.history),
        )
        self._resident = weakref.ref(copy)
        return copy

    def borrow(self, model: LoadedModel) -> LoadedModel:
        """Put a second model on the device for the current stage only (the base model a
        paired evaluator compares against); :meth:`end_stage` sends it back."""
        if model is not self.resident and all(g() is not model for g in self._guests):
            to_device(model.model, self.device)
            self._guests.append(weakref.ref(model))
        return model

    def end_stage(self) -> None:
        for model in self._live_guests():
            to_host(model.model)
        self._guests = []

    def forget(self, model: LoadedModel) -> None:
        """The scheduler dropped ``model``: nothing to move back."""
        if self.resident is model:
            self._resident = None
        self._guests = [g for g in self._guests if g() is not model]

    def _live_guests(self) -> list[LoadedModel]:
        return [m for g in self._guests if (m := g()) is not None]

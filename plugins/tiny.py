"""The ``tiny`` model source: a freshly initialised 2-layer model of a chosen architecture.

For smoke-testing a spec (every stage runs in seconds, nothing is downloaded) and for
tests. Its numbers mean nothing about real models.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CheckContext, LoadedModel, ModelSource, Params, RunContext


class TinyParams(Params):
    model_type: Literal["llama", "qwen2", "mistral", "gemma3_text"] = Field(
        "llama", description="Architecture of the tiny model."
    )
    tied: bool = Field(True, description="Tie the output head to the input embeddings.")
    seed: int = Field(0, ge=0, description="Seed of the random initialisation.")


class TinySource(ModelSource):
    name: ClassVar[str] = "tiny"
    Params: ClassVar[type[Params]] = TinyParams
    description: ClassVar[str] = "a randomly initialised 2-layer model (lawlab.testing): smoke tests only"

    def model_type(self, params: Any, ctx: CheckContext) -> str | None:
        return params.model_type

    def config(self, params: Any, ctx: CheckContext) -> dict[str, Any] | None:
        from lawlab.testing import TINY_SIZES

        return {"model_type": params.model_type, **TINY_SIZES}

    def load(self, params: Any, ctx: RunContext) -> LoadedModel:
        from lawlab.testing import tiny_model

        loaded = tiny_model(params.model_type, tied=params.tied, seed=params.seed)
        loaded.model.to(dtype=ctx.torch_dtype())
        return loaded


@hookimpl
def register_model_sources(register):
    register(TinySource())

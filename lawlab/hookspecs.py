"""The whole plugin contract of lawlab, on one page.

A plugin is a module (or any object) with functions named like the hooks below and
decorated with ``lawlab.hookimpl``. It is found through an entry point of group
``lawlab`` in its package's metadata::

    [project.entry-points.lawlab]
    my-pruner = "my_package.pruner"

Every hook receives one ``register`` callable and calls it once per thing it adds.
What each thing must look like is defined in :mod:`lawlab.api`. The built-in methods,
recipes, evaluators, laws, sources and datasets are registered through these same hooks
and entry points (see ``plugins/``); lawlab's core imports none of them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("lawlab")
hookimpl = pluggy.HookimplMarker("lawlab")

Register = Callable[[Any], None]


@hookspec
def register_pruners(register: Register) -> None:
    """Add compression methods: ``register(MyPruner())``, a :class:`lawlab.api.Pruner`."""


@hookspec
def register_rft_recipes(register: Register) -> None:
    """Add recovery fine-tuning recipes, each a :class:`lawlab.api.RFTRecipe`."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Add evaluators (intrinsic, extrinsic or runtime), each a :class:`lawlab.api.Evaluator`."""


@hookspec
def register_law_forms(register: Register) -> None:
    """Add functional forms of a compression law, each a :class:`lawlab.api.LawForm`."""


@hookspec
def register_model_sources(register: Register) -> None:
    """Add places models come from (hub, folder, GGUF, offline pack...), each a
    :class:`lawlab.api.ModelSource`."""


@hookspec
def register_datasets(register: Register) -> None:
    """Add text datasets with train and test splits, each a :class:`lawlab.api.Dataset`."""


@hookspec
def register_architectures(register: Register) -> None:
    """Add architecture adapters keyed by ``config.model_type``, each a
    :class:`lawlab.api.ArchitectureAdapter`."""


@hookspec
def register_executors(register: Register) -> None:
    """Add places a study's cells run (in-process, a cluster...), each a
    :class:`lawlab.api.Executor`."""


@hookspec
def register_packs(register: Register) -> None:
    """Add offline packs (models or data inside PyPI packages), each a :class:`lawlab.api.Pack`."""


@hookspec
def register_quantizers(register: Register) -> None:
    """Add weight quantisers (a hybrid pipeline's steps), each a :class:`lawlab.api.Quantizer`."""

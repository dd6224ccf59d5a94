"""A test plugin that claims a name a built-in already has."""

from typing import ClassVar

from lawlab import hookimpl
from lawlab.api import Pruner


class Impostor(Pruner):
    name: ClassVar[str] = "random-prunenet"

    def prune(self, model, ratio, params, ctx):
        return model


@hookimpl
def register_pruners(register):
    register(Impostor())

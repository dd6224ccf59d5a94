"""The in-process executor: runs every cell here, on this machine's GPU or CPU."""

from __future__ import annotations

from typing import Any, ClassVar

from lawlab import hookimpl
from lawlab.api import Executor


class LocalExecutor(Executor):
    name: ClassVar[str] = "local"
    description: ClassVar[str] = "run the cells one after another in this process (GPU when there is one)"
    default: ClassVar[bool] = True  # what a spec without [execution] executor gets

    def execute(self, plan: Any, store: Any, params: Any, **options: Any) -> Any:
        from lawlab.run.scheduler import LocalScheduler

        return LocalScheduler(plan, store, **options).run()


@hookimpl
def register_executors(register):
    register(LocalExecutor())

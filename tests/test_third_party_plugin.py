"""A third-party pruner package, installed into a fresh environment, is found through its
entry point and passes the conformance kit there."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "lawlab-l2-pruner"

CHILD = """
import json
from lawlab.registry import load_registry
from lawlab.testing import check_pruner, tiny_registry
import lawlab_l2_pruner

registry = load_registry()
info = [p for p in registry.plugins if p.name == "l2-pruner"][0]
pruner = registry.get("pruners", "l2-magnitude")
report = check_pruner(pruner, model_types=("llama", "gemma3_text"), registry=tiny_registry(lawlab_l2_pruner))
print(json.dumps({"distribution": info.distribution, "builtin": info.builtin, "passed": report.passed,
                  "report": str(report)}))
"""


SPEC = """
[study]
name = "l2-tiny"

[[models]]
name = "tiny-llama"
source = "tiny"
params = { model_type = "llama" }

[[methods]]
method = "l2-magnitude"
ratios = [0.5]

[[evaluators]]
evaluator = "cross-entropy"
params = { datasets = ["tiny-corpus"], window = 64 }

[execution]
device = "cpu"
"""


@pytest.mark.slow  # builds a venv, installs the example package into it, runs the conformance kit
def test_example_package_installs_registers_and_conforms(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # A venv made from a venv does not see its parent's packages (--system-site-packages
    # means the base interpreter's); a .pth line adds this environment's site-packages, so
    # torch and lawlab are visible without reinstalling them.
    child_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    parent_site = sysconfig.get_paths()["purelib"]
    Path(child_site, "_parent_env.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    source = shutil.copytree(EXAMPLE, tmp_path / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    # Built from a copy: a build writes build/ and *.egg-info next to the sources.
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
                   check=True, env=env, cwd=tmp_path, capture_output=True)
    # Only the example joins the built-ins, so a broken unrelated plugin cannot mask the result.
    env.update(LAWLAB_PLUGINS="l2-pruner", LAWLAB_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    out = subprocess.run([python, "-c", CHILD], check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["distribution"] == "lawlab-l2-pruner" and not result["builtin"]
    assert result["passed"], result["report"]

    # ... and a study uses it like a built-in method.
    (tmp_path / "spec.toml").write_text(SPEC)
    cli = [python, "-m", "lawlab.cli.main"]
    listed = subprocess.run([*cli, "plugins"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "l2-pruner" in listed.stdout and "l2-magnitude" in listed.stdout, listed.stdout + listed.stderr
    run = subprocess.run([*cli, "run", "spec.toml"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    with open(tmp_path / "runs" / "l2-tiny" / "results.csv") as f:
        pruned = [row for row in csv.DictReader(f) if row["method"] == "l2-magnitude"]
    assert pruned and float(pruned[0]["ratio"]) == 0.5 and float(pruned[0]["flops_speedup"]) > 1.0


def test_example_is_not_installed_here():
    """The example must come from the temporary environment, not leak into this one."""
    with pytest.raises(ImportError):
        __import__("lawlab_l2_pruner")

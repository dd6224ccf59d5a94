"""The built-in pruners pass the conformance kit on every tiny architecture they support."""

from __future__ import annotations

import pytest

from lawlab.testing import ConformanceResult, check_pruner, tiny_registry

pytestmark = pytest.mark.filterwarnings("ignore")


def _pruner(name: str):
    import importlib

    module = importlib.import_module(f"lawlab_plugins.{MODULES.get(name, name).replace('-', '_')}")
    return tiny_registry(module).get("pruners", name), module


MODULES = {"magnitude": "wanda"}  # plugin modules that register more than one pruner
CASES = {
    "random-prunenet": {},
    "prunenet": {"episodes": 2},
    "slicegpt": {"calibration_dataset": "tiny-corpus", "calibration_samples": 8, "calibration_seqlen": 32},
    # a sparse method (zeros in place) and a depth method (whole layers) among them
    "magnitude": {},
    "wanda": {"calibration_dataset": "tiny-corpus", "calibration_samples": 8, "calibration_seqlen": 32},
    "wanda-sp": {"calibration_dataset": "tiny-corpus", "calibration_samples": 8, "calibration_seqlen": 32},
    "shortgpt": {"calibration_dataset": "tiny-corpus", "calibration_samples": 8, "calibration_seqlen": 32},
}


@pytest.mark.parametrize("name", list(CASES))
def test_builtin_pruner_conforms(name, tmp_path):
    pruner, module = _pruner(name)
    report = check_pruner(pruner, CASES[name], work_dir=tmp_path, registry=tiny_registry(module))
    assert report.passed, str(report)
    ran = {r.model_type for r in report.results if not r.skipped}
    assert ran == {"llama", "qwen2", "mistral", "gemma3_text"}
    checks = {r.check for r in report.results}
    assert {"r0-logits", "accounting", "params-monotone", "save-load", "same-seed", "generates"} <= checks


def test_kit_catches_a_broken_pruner(tmp_path):
    """A pruner that perturbs weights at r = 0 and forgets the history must fail."""
    import torch

    from lawlab.accounting import compression, measure
    from lawlab.api import Pruner

    class Broken(Pruner):
        name = "broken"

        def prune(self, model, ratio, params, ctx):
            adapter = ctx.registry.get("architectures", model.model_type)
            before = measure(model.model, adapter)
            with torch.no_grad():
                adapter.mlp(adapter.layers(model.model)[0])[2].weight.mul_(1.5)
            model.compression = compression(self.name, ratio, before, measure(model.model, adapter), 0.0)
            return model

    report = check_pruner(Broken(), model_types=("llama",), work_dir=tmp_path)
    failed = {r.check for r in report.failures()}
    assert {"r0-logits", "accounting"} <= failed
    assert isinstance(report.results[0], ConformanceResult)
    with pytest.raises(AssertionError, match="FAIL"):
        from lawlab.testing import assert_conforms

        assert_conforms(Broken(), model_types=("llama",), work_dir=tmp_path / "again")

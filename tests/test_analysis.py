"""The one analysis: fits, the form comparison and the findings of a study are computed once,
kept in analysis.json, and every reader (the report, the figures, the law commands) shows
the same numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from synthetic_store import build_store

from lawlab.analysis import ANALYSIS_FILE, FitBook, analyse, study_analysis
from lawlab.cli.main import main
from lawlab.laws.fit import fit_law
from lawlab.registry import get_registry


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("analysis")
    build_store(root)
    return root


def test_computed_once_then_read_until_a_stored_number_changes(tmp_path: Path, monkeypatch) -> None:
    build_store(tmp_path, keep=lambda cell: not (cell["kind"] == "eval" and cell["ratio"] == 0.7 and cell["size"]))
    first = study_analysis(tmp_path)
    path = tmp_path / ANALYSIS_FILE
    assert path.is_file() and json.loads(path.read_text())["key"] == first.key

    import lawlab.analysis as analysis_module

    def no_refit(*args, **kwargs):
        raise AssertionError("the analysis was computed again although nothing changed")

    monkeypatch.setattr(analysis_module, "analyse", no_refit)
    again = study_analysis(tmp_path)  # read, not recomputed
    assert again.key == first.key
    assert [f.theta for f in again.fits] == [f.theta for f in first.fits]  # JSON keeps floats exactly
    monkeypatch.undo()

    # one more stored cell: the rows changed, so the analysis is computed again
    build_store(tmp_path)  # now every cell is stored
    third = study_analysis(tmp_path)
    assert third.key != first.key and third.rows_used > first.rows_used


def test_report_cli_and_findings_show_the_same_numbers(study: Path, capsys) -> None:
    analysis = study_analysis(study)
    assert main(["report", str(study)]) == 0
    # the report's law tables hold the analysis' coefficients, to the digit
    with open(study / "report" / "tables" / "fits_compression-law_intrinsic_by_model.csv") as fh:
        rows = list(csv.DictReader(fh))
    ours = {str(f.group["value"]): f for f in analysis.fits_of(kind="intrinsic", by="model")}
    assert len(rows) == len(ours) == 2
    for row in rows:
        assert float(row["beta"]) == ours[row["group"]].theta["beta"]
    # and its form comparison is the analysis' ranking, in order
    with open(study / "report" / "tables" / "form_comparison_extrinsic.csv") as fh:
        ranked = [r["form"] for r in csv.DictReader(fh)]
    assert ranked == [r.form for r in analysis.comparisons["extrinsic"].rows]
    # `lawlab fit` on the folder prints the analysis' fits and fits nothing anew
    capsys.readouterr()
    assert main(["fit", str(study)]) == 0
    out = capsys.readouterr().out
    assert ANALYSIS_FILE in out
    pooled = next(f for f in analysis.fits if f.metric_kind == "extrinsic" and f.group["by"] == "pooled")
    assert f"{pooled.theta['beta']:.4f}"[:6] in out.replace("−", "-")
    # `lawlab findings` prints the analysis' findings
    assert main(["findings", str(study)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    for line in analysis.findings.summary().splitlines():
        assert " ".join(line.split()) in printed
    report_findings = json.loads((study / "report" / "findings.json").read_text())
    assert report_findings["laws"]["verdict"] == analysis.findings["laws"].verdict


def test_one_ranking_of_law_forms_and_one_beta_per_model(study: Path) -> None:
    analysis = study_analysis(study)
    laws = analysis.findings["laws"]
    for kind, table in analysis.comparisons.items():
        # the findings rank the forms exactly as the comparison does
        assert [x["form"] for x in laws.evidence[kind]["forms"]] == [r.form for r in table.rows]
        assert laws.evidence[kind]["ranked_by"] == table.rank_by == "leave-one-model-out"
    # RQ2's per-model runtime β is the study's own runtime-law fit per model, the same object's numbers
    runtime = {f.group["value"]: f for f in analysis.fits_of(kind="runtime", by="model") if not f.skipped}
    rq2 = analysis.findings["rq2"].evidence["beta"]
    assert runtime and set(runtime) == set(rq2)
    for model, fit in runtime.items():
        assert rq2[model]["beta"] == fit.theta["beta"]
    # the laws verdict is made on the study's pooled fit of eq. 1 (its interval, its held-out error)
    pooled = next(f for f in analysis.fits_of(form="compression-law", kind="extrinsic", by="pooled"))
    part = next(p for p in laws.parts if p.name.startswith("compression-law on extrinsic"))
    assert part.evidence["theta"] == pooled.theta and part.evidence["heldout"] == pooled.heldout


def test_the_fit_book_reuses_a_fit_on_the_same_points_only() -> None:
    rows = [{"model": "m", "ratio": r, "D": D, "value": 3.0 * (1 + r) ** 1.5 * (1 + 1 / (D + 1)) ** 0.5 * k,
             "L0": 3.0, "kind": "intrinsic", "law_input": True, "method": "x"}
            for r in (0.1, 0.3, 0.5) for D, k in ((0, 1.0), (10, 1.01), (100, 0.99))]
    made = fit_law("compression-law", rows, metric_kind="intrinsic")
    book = FitBook([made])
    assert book.fit("compression-law", list(reversed(rows)), metric_kind="intrinsic") is made
    fewer = book.fit("compression-law", rows[:-1], metric_kind="intrinsic")
    assert fewer is not made and fewer.n == len(rows) - 1 and book.extra == [fewer]


def test_a_csv_goes_through_the_same_stage(study: Path, tmp_path: Path, capsys) -> None:
    from lawlab.analysis import csv_analysis

    assert main(["export", str(study), "--format", "csv", "-o", str(tmp_path / "results.csv")]) == 0
    from_csv = csv_analysis(tmp_path / "results.csv")
    from_folder = analyse(__import__("lawlab.run.store", fromlist=["load_table"]).load_table(study),
                          laws=from_csv_laws(from_csv), registry=get_registry(), seed=0)
    pooled_csv = next(f for f in from_csv.fits if f.metric_kind == "extrinsic" and f.group["by"] == "pooled")
    pooled_dir = next(f for f in from_folder.fits if f.metric_kind == "extrinsic" and f.group["by"] == "pooled")
    assert pooled_csv.theta == pytest.approx(pooled_dir.theta, rel=1e-9)
    assert from_csv.ranking("extrinsic") == from_folder.ranking("extrinsic")


def from_csv_laws(analysis):
    from lawlab.spec.models import LawEntry

    return [LawEntry.model_validate(law) for law in analysis.options["laws"]]


def test_a_published_study_is_read_again_without_its_store(study: Path, tmp_path: Path, capsys) -> None:
    # what docs/results/ keeps: results.csv and analysis.json, no store
    analysis = study_analysis(study)
    published = tmp_path / "published"
    published.mkdir()
    assert main(["export", str(study), "--format", "csv", "-o", str(published / "results.csv")]) == 0
    stored = analysis.to_dict()
    stored["paired"] = [{  # what per-question records gave, which a CSV cannot hold
        "model": "small", "method": "m", "ratio": 0.5, "seed": 0, "D": 0.0, "evaluator": "lm-eval",
        "against": "unpruned", "tasks": 2, "questions": 123, "accuracy": {"diff": -0.05, "low": -0.15, "high": 0.05},
        "task_loss": {"diff": 0.15, "low": 0.11, "high": 0.19}}]
    (published / ANALYSIS_FILE).write_text(json.dumps(stored))

    again = study_analysis(published)
    assert again.paired == stored["paired"]  # carried over, not recomputed from nothing
    assert [(a.key, a.verdict) for a in again.findings.answers.values()] == \
        [(a.key, a.verdict) for a in analysis.findings.answers.values()]
    pooled = next(f for f in again.fits if f.metric_kind == "extrinsic" and f.group["by"] == "pooled")
    before = next(f for f in analysis.fits if f.metric_kind == "extrinsic" and f.group["by"] == "pooled")
    assert pooled.theta == pytest.approx(before.theta, rel=1e-9)
    assert again.source == str(published)
    assert json.loads((published / ANALYSIS_FILE).read_text()) == stored  # read, never rewritten

    capsys.readouterr()
    assert main(["findings", str(published)]) == 0
    assert "rq1" in capsys.readouterr().out.lower()

    (published / ANALYSIS_FILE).write_text("{}")  # not lawlab's: a clear error, exit 2
    assert main(["findings", str(published)]) == 2
    assert "not an analysis lawlab wrote" in capsys.readouterr().err


def test_report_on_a_published_study_rewrites_its_findings_section_only(study: Path, tmp_path: Path) -> None:
    import csv as csv_module

    published = tmp_path / "published"
    published.mkdir()
    assert main(["export", str(study), "--format", "csv", "-o", str(published / "results.csv")]) == 0
    fresh = study_analysis(study)
    stale = fresh.to_dict()
    stale["findings"]["rq1"]["verdict"] = "a verdict of an older lawlab"
    (published / ANALYSIS_FILE).write_text(json.dumps(stale))
    old = ("# the study\n\nCompression-law study report.\n\n## Findings: the paper's questions\n\n"
           "RQ1, shape: a verdict of an older lawlab.\n\n## Summary\n\nthe study's own summary\n")
    (published / "report.md").write_text(old)

    assert main(["report", str(published)]) == 0
    text = (published / "report.md").read_text()
    assert "older lawlab" not in text and "the study's own summary" in text  # one section replaced, the rest kept
    assert text.count("## Findings: the paper's questions") == 1 and "Re-read" in text
    assert text.index("## Findings") < text.index("## Summary")
    for answer in fresh.findings.answers.values():  # the answers of today's rules, in the report and its files
        assert f"{answer.verdict}." in text.split("## Summary")[0]
    written = json.loads((published / "findings.json").read_text())
    assert {k: written[k]["verdict"] for k in fresh.findings.answers} == \
        {k: a.verdict for k, a in fresh.findings.answers.items()}
    with open(published / "tables" / "findings.csv", newline="") as fh:
        assert [row["verdict"] for row in csv_module.DictReader(fh)] == \
            [a.verdict for a in fresh.findings.answers.values()]
    assert json.loads((published / ANALYSIS_FILE).read_text())["findings"]["rq1"]["verdict"] == \
        fresh.findings.answers["rq1"].verdict

    (published / "report.md").unlink()  # no report at all: the section is the whole of a new one
    assert main(["report", str(published)]) == 0
    assert (published / "report.md").read_text().count("## Findings: the paper's questions") == 1

"""The findings stage: the paper's research questions answered, with numbers, for one study.

``study_findings(RUN_OR_CSV)`` reads a study's results (its output folder, or a results
CSV in ``lawlab export``'s format) and returns :class:`Findings`: one :class:`Answer` per
question (``rq1`` … ``rq5``) and one for the laws. Each answer states the paper's claim,
the numbers it rests on, and a verdict against the claim: ``consistent``,
``inconsistent`` or ``undetermined`` (with the reason: one model only, no RFT cells...).

An answer is made of parts, each a sub-claim with its own verdict; the answer is
consistent when every part that the data can decide is, inconsistent when one of them is
not (the reason says which), and undetermined when no part can be decided.

Intervals are 95% percentile bootstrap intervals over *cells* (one cell = one compressed
variant: model, method, r, RFT data and D), or t intervals of fitted coefficients; every
answer says which in ``ci``. The core knows no method: "calibration-based" is what the
pruner plugin declares (``Pruner.calibration``), recorded in the results' ``calibration``
column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import Answer, Findings
from lawlab.findings.laws import laws
from lawlab.findings.rows import chance_rule, clean_row
from lawlab.findings.rq1_shape import rq1
from lawlab.findings.rq2_speed import rq2
from lawlab.findings.rq3_recovery import rq3
from lawlab.findings.rq4_budget import rq4
from lawlab.findings.rq5_calibration import rq5
from lawlab.findings.stats import ALPHA

# --------------------------------------------------------------------------- the stage

STEPS: dict[str, Callable[..., Answer]] = {"rq1": rq1, "rq2": rq2, "rq3": rq3, "rq4": rq4, "rq5": rq5, "laws": laws}

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook
    from lawlab.laws.compare import ComparisonTable


def findings(rows: Sequence[dict[str, Any]], *, source: str = "", seed: int = 0) -> Findings:
    """Answer every question from tidy result rows (``load_table`` or a results CSV), with
    no study fits to share (:func:`lawlab.analysis.analyse` gives them)."""
    clean, chance = chance_rule([clean_row(r) for r in rows])
    return answer_questions(clean, chance, source=source, seed=seed)


def answer_questions(clean: Sequence[dict[str, Any]], chance: dict[str, Any], *, source: str = "", seed: int = 0,
                     book: FitBook | None = None, comparisons: dict[str, ComparisonTable] | None = None,
                     paired: Sequence[dict[str, Any]] = ()) -> Findings:
    """The answers, from rows the chance rule has already been applied to (``chance`` says
    what it left out); ``book`` and ``comparisons`` are the study's fits and form comparison."""
    import warnings

    notes = []
    if chance["left_out"]:
        notes.append("left out as not above chance on the unpruned model (one-sided binomial test, p ≥ "
                     f"{ALPHA}): " + ", ".join(chance["left_out"]))
    if not any(r["method"] for r in clean):
        notes.append("no compressed variant in the results: every question is undetermined")
    # the paper's questions are about pruning: quantised (hybrid) variants answer "composition"
    pruning = [r for r in clean if not r.get("quant")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fits warn about nominal ratios; the answers say what they used
        answers = {key: step(pruning, seed, book) for key, step in STEPS.items() if key != "laws"}
        answers["laws"] = laws(pruning, seed, book, comparisons)  # law rows hold no quantised variant
    _add_paired_notes(answers, paired)
    if len(pruning) < len(clean):
        from lawlab.findings.composition import composition

        answers["composition"] = composition(list(clean), seed)
    result = Findings(source, answers, notes)
    result.chance = chance
    return result


def _add_paired_notes(answers: dict[str, Answer], paired: Sequence[dict[str, Any]]) -> None:
    """RQ1 and RQ3 read the differences paired on questions beside their cell-level numbers."""
    from lawlab.findings.paired import paired_notes

    answers["rq1"].notes += paired_notes(paired, "unpruned", lambda p: p["ratio"] < 0.5 and not p["D"],
                                         "change against the unpruned model at r < 0.5 without RFT")
    answers["rq3"].notes += paired_notes(paired, "no RFT", lambda p: p["D"] > 0,
                                         "change from RFT, against the same pruned model without it")


def study_findings(source: str | Path, *, seed: int = 0) -> Findings:
    """The findings of a study folder or a results CSV: the answers of its one analysis."""
    from lawlab.analysis import csv_analysis, study_analysis

    path = Path(source)
    return study_analysis(path).findings if path.is_dir() else csv_analysis(path, seed=seed).findings

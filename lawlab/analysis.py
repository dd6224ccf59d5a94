"""The analysis stage: one study's numbers, computed once.

``analyse(rows, laws=..., registry=...)`` applies the chance rule to the tidy rows once, then
fits the spec's laws, compares the law forms (one ranking per metric kind) and answers the
paper's questions, all on those rows and with one set of options. ``study_analysis(FOLDER)``
keeps the result beside the store as ``analysis.json``, keyed by a digest of the rows and the
options: the report, the figures and the law commands read it, and it is computed again only
when a stored number or an option changed. A results CSV goes through the same function, and
so does a published study (a folder of ``results.csv`` and ``analysis.json`` without its store:
:func:`published_analysis`), so a committed result can be read again under today's rules.

The findings' own fits (a runtime law per model for RQ2, eq. 1 per calibration for RQ5...)
come from the study's fits when one was made on the same points (:class:`FitBook`), so a
model has one β wherever it is shown.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.files import jsonable

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.findings.answers import Findings
    from lawlab.laws.compare import ComparisonTable
    from lawlab.laws.results import FitResult
    from lawlab.registry import Registry
    from lawlab.spec.models import LawEntry

ANALYSIS_FILE = "analysis.json"
FORMAT = 1  # bumped when the file's layout changes: an older file is computed again


# --------------------------------------------------------------------------- fits shared by the questions


class FitBook:
    """The fits a question asks for, answered from the study's fits where one was made on the
    same points with the paper's defaults (OLS, nominal r); else fitted once and kept."""

    def __init__(self, fits: Sequence[FitResult] = ()):
        self.made = [f for f in fits if not f.skipped and f.method == "ols" and f.ratio == "nominal"]
        self.extra: list[FitResult] = []

    def fit(self, form: str, rows: Sequence[dict[str, Any]], *, metric_kind: str,
            group: dict[str, str] | None = None) -> FitResult:
        from lawlab.laws.fit import fit_law

        want = _points(rows)
        for f in [*self.made, *self.extra]:
            if f.form == form and f.metric_kind == metric_kind and _fit_points(f) == want and _default_options(f):
                return f
        fit = fit_law(form, rows, metric_kind=metric_kind, group=group)
        self.extra.append(fit)
        return fit


def _points(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((str(r["model"]), round(float(r["ratio"] or 0), 9), round(float(r["D"] or 0), 6),
                   round(float(r["value"]), 12)) for r in rows)


def _fit_points(f: FitResult) -> list[tuple[Any, ...]]:
    d = f.data
    if not d or "model" not in d:
        return []
    return sorted((str(m), round(float(r), 9), round(float(D), 6), round(float(v), 12))
                  for m, r, D, v in zip(d["model"], d["r"], d["D"], d["value"], strict=True))


def _default_options(f: FitResult) -> bool:
    if f._form is None:
        return not f.options
    return f.options == f._form.Params().model_dump(mode="json")


# --------------------------------------------------------------------------- the result


@dataclass
class Analysis:
    """Fits, form comparisons and findings of one study, from one set of rows and options."""

    source: str
    key: str  # digest of the rows and the options (see :func:`analysis_key`)
    options: dict[str, Any]  # seed and laws
    fits: list[FitResult]
    comparisons: dict[str, ComparisonTable]  # metric kind -> the one ranking of law forms
    findings: Findings
    chance: dict[str, Any] = field(default_factory=dict)  # each task against chance, what was left out
    extra_fits: list[FitResult] = field(default_factory=list)  # made for a question or a figure, not by the spec
    paired: list[dict[str, Any]] = field(default_factory=list)  # differences paired on questions (findings.paired)
    rows_used: int = 0
    created: float = field(default_factory=time.time)

    def ranking(self, kind: str) -> list[str]:
        """The law forms for ``kind``, best first (fitted ones only)."""
        table = self.comparisons.get(kind)
        return [r.form for r in table.rows if not r.fit.skipped] if table else []

    def fits_of(self, *, form: str | None = None, kind: str | None = None, by: str | None = None) -> list[FitResult]:
        return [f for f in self.fits if (form is None or f.form == form) and (kind is None or f.metric_kind == kind)
                and (by is None or f.group.get("by") == by)]

    def summary(self) -> str:
        lines = [f"Analysis of {self.source}: {self.rows_used} rows, {len(self.fits)} fits"]
        for kind, table in self.comparisons.items():
            lines.append(f"  {kind}: forms ranked by {table.rank_by}: " + ", ".join(self.ranking(kind)))
        lines += [f"  {a.key}: {a.verdict}" for a in self.findings.answers.values()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "format": FORMAT, "source": self.source, "key": self.key, "options": self.options,
            "created": self.created, "rows_used": self.rows_used, "chance": self.chance,
            "fits": [f.to_dict() for f in self.fits], "extra_fits": [f.to_dict() for f in self.extra_fits],
            "paired": self.paired,
            "comparisons": {k: t.to_dict() for k, t in self.comparisons.items()},
            "findings": self.findings.to_dict(),
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any], registry: Registry | None = None) -> Analysis:
        from lawlab.findings.answers import Findings
        from lawlab.laws.compare import ComparisonTable
        from lawlab.laws.results import FitResult

        fits = [FitResult.from_dict(f) for f in d["fits"]]
        extra = [FitResult.from_dict(f) for f in d.get("extra_fits", [])]
        if registry is not None:
            attach_forms([*fits, *extra], registry)
        return cls(d["source"], d["key"], d["options"], fits,
                   {k: ComparisonTable.from_dict(t) for k, t in d["comparisons"].items()},
                   Findings.from_dict(d["findings"]), d.get("chance", {}), extra, d.get("paired", []),
                   d.get("rows_used", 0), d.get("created", 0.0))


def attach_forms(fits: Sequence[FitResult], registry: Registry) -> None:
    """Give fits read from JSON their law form (for predictions and the written-out law)."""
    for f in fits:
        if f._form is None and registry.has("law_forms", f.form):
            f._form = registry.get("law_forms", f.form)
            f._options = f._form.Params.model_validate(f.options)


# --------------------------------------------------------------------------- the stage


def analysis_key(rows: Sequence[dict[str, Any]], options: dict[str, Any]) -> str:
    from lawlab import __version__

    payload = json.dumps({"format": FORMAT, "lawlab": __version__, "options": options, "rows": list(rows)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def prepare_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows every fit and finding reads: numbers as numbers, the chance rule applied (a
    task the unpruned model does not answer above chance leaves the means; the second value
    says what was left out and why), and each variant's L0 error for the fits to propagate."""
    from lawlab.findings.rows import chance_rule, clean_row, with_l0_errors

    clean, chance = chance_rule([clean_row(r) for r in rows])
    return with_l0_errors(clean), chance


def analyse(rows: Sequence[dict[str, Any]], *, laws: Sequence[LawEntry], registry: Registry, seed: int = 0,
            source: str = "", questions: Sequence[dict[str, Any]] = (),
            paired: Sequence[dict[str, Any]] | None = None) -> Analysis:
    """The whole analysis of tidy result rows (``load_table`` or a results CSV), with the
    per-question records (``load_questions``) where the study kept them. ``paired`` gives
    paired comparisons computed before, where the records themselves are not at hand."""
    import warnings

    from lawlab.findings.paired import paired_differences
    from lawlab.findings.stage import answer_questions
    from lawlab.laws.compare import compare_study
    from lawlab.laws.fit import fit_study

    options = {"seed": seed, "laws": [law.model_dump(mode="json") for law in laws]}
    key = analysis_key(rows, options)
    clean, chance = prepare_rows(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fits note nominal ratios in their own notes
        fits = fit_study(clean, laws, registry, seed=seed)
        comparisons = compare_study(clean, laws, registry, seed=seed)
        book = FitBook(fits)
        _per_dataset_fits(clean, laws, book)
        if paired is None:
            paired = paired_differences(questions, clean, seed=seed)
        found = answer_questions(clean, chance, source=source, seed=seed, book=book, comparisons=comparisons,
                                 paired=paired)
    return Analysis(source, key, options, fits, comparisons, found, chance, book.extra, list(paired), len(clean))


def _per_dataset_fits(rows: Sequence[dict[str, Any]], laws: Sequence[LawEntry], book: FitBook) -> None:
    """The intrinsic law per test dataset (the paper's Figure 10) when the results have two
    datasets or more and the spec groups no intrinsic law by dataset."""
    from lawlab.laws.data import law_rows
    from lawlab.laws.forms import LawFitError, main_law

    if any(law.metric == "intrinsic" and "dataset" in law.group_by for law in laws):
        return
    selected = [r for r in law_rows(rows, "intrinsic") if r.get("value") is not None and r.get("L0")]
    datasets = sorted({str(r["dataset"]) for r in selected})
    if len(datasets) < 2:
        return
    for ds in datasets:
        try:
            book.fit(main_law("intrinsic"), [r for r in selected if r["dataset"] == ds], metric_kind="intrinsic",
                     group={"by": "dataset", "value": ds})
        except LawFitError:
            continue  # the figure says which dataset has no fit


def study_analysis(folder: str | Path, registry: Registry | None = None, *, write: bool = True) -> Analysis:
    """A study folder's analysis: ``analysis.json`` when it was computed from the rows and
    the laws stored now, else computed again (and written, unless ``write`` is False)."""
    from lawlab.files import write_json
    from lawlab.run.store import Store, load_questions, load_table
    from lawlab.spec.models import LawEntry

    if registry is None:
        from lawlab.registry import get_registry

        registry = get_registry()
    root = Path(folder)
    if is_published(root):  # read, not rewritten: the folder is someone's published result
        return published_analysis(root, registry, write=False)
    rows = load_table(root)  # says so when the folder is not a study's
    spec_file = root / "spec.json"  # the spec the study last ran with; else the store's copy
    if spec_file.is_file():
        spec = json.loads(spec_file.read_text())
    else:
        with Store(root) as store:
            spec = store.meta("spec") or {}
    laws = [LawEntry.model_validate(law) for law in spec.get("laws", [])]
    seed = int(spec.get("study", {}).get("seed", 0))
    options = {"seed": seed, "laws": [law.model_dump(mode="json") for law in laws]}
    path = root / ANALYSIS_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("format") == FORMAT and stored.get("key") == analysis_key(rows, options):
                return Analysis.from_dict(stored, registry)
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or from another layout: computed again below
    result = analyse(rows, laws=laws, registry=registry, seed=seed, source=str(root),
                     questions=load_questions(root).rows)
    if write:
        write_json(path, result.to_dict())
    return result


RESULTS_CSV = "results.csv"


def is_published(folder: Path) -> bool:
    """A study's results without its store: ``results.csv`` beside an ``analysis.json``."""
    from lawlab.run.store import DB_NAME

    return (not (folder / DB_NAME).exists() and (folder / RESULTS_CSV).is_file()
            and (folder / ANALYSIS_FILE).is_file())


def published_analysis(folder: str | Path, registry: Registry | None = None, *, write: bool = True) -> Analysis:
    """A published study analysed again, always: the rows of its ``results.csv`` with the laws
    and the seed its ``analysis.json`` records. Paired comparisons need the per-question records, which
    only the store keeps: they are carried over from ``analysis.json`` as they were computed."""
    from lawlab.files import write_json
    from lawlab.findings.rows import read_rows
    from lawlab.spec.models import LawEntry

    if registry is None:
        from lawlab.registry import get_registry

        registry = get_registry()
    root = Path(folder)
    path = root / ANALYSIS_FILE
    try:
        before = json.loads(path.read_text())
        options = before["options"]
        laws = [LawEntry.model_validate(law) for law in options["laws"]]
    except (ValueError, KeyError, TypeError) as exc:
        from lawlab.errors import UsageError

        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UsageError(f"{path}: not an analysis lawlab wrote ({what}); re-analyse {root / RESULTS_CSV} "
                         "with `lawlab findings` on the CSV instead") from None
    rows = read_rows(root / RESULTS_CSV)
    seed = int(options.get("seed", 0))
    # always computed again: reading it under the rules of this lawlab is the point
    result = analyse(rows, laws=laws, registry=registry, seed=seed, source=str(root),
                     paired=before.get("paired", []))
    if write:
        write_json(path, result.to_dict())
    return result


def csv_analysis(path: str | Path, registry: Registry | None = None, *,
                 laws: Sequence[LawEntry] | None = None, seed: int = 0) -> Analysis:
    """A results CSV's analysis, with the default laws (eq. 1 on loss and accuracy, pooled and
    per model; the runtime law) unless ``laws`` are given."""
    from lawlab.findings.rows import read_rows

    if registry is None:
        from lawlab.registry import get_registry

        registry = get_registry()
    rows = read_rows(path)
    return analyse(rows, laws=default_laws(rows) if laws is None else laws, registry=registry, seed=seed,
                   source=str(path))


def default_laws(rows: Sequence[dict[str, Any]]) -> list[LawEntry]:
    """The laws a study without a spec is analysed with: for each metric kind the rows have, the
    form that declares itself that kind's law, pooled and per model."""
    from lawlab.laws.forms import main_law
    from lawlab.spec.models import LawEntry

    kinds = sorted({str(r.get("kind") or "") for r in rows} & {"intrinsic", "extrinsic", "runtime"})
    return [LawEntry.model_validate({"form": main_law(kind), "metric": kind, "group_by": ["pooled", "model"]})
            for kind in kinds]


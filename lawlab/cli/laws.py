"""``lawlab fit``, ``lawlab compare`` and ``lawlab critical``: laws from a study's store
or from any results CSV (published numbers included), and the decisions they support.

Each command prints rich tables and writes JSON: into the study's output folder, or
next to the CSV (``results.csv`` → ``results.fits.json``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from lawlab.files import jsonable

if TYPE_CHECKING:
    from lawlab.spec.models import MetricKind

KINDS: tuple[MetricKind, ...] = ("intrinsic", "extrinsic", "runtime")
RankBy = Literal["leave-one-model-out", "leave-one-ratio-out", "leave-one-axis-setting-out", "aic", "bic"]
GROUPS = ("pooled", "model", "method", "calibration", "dataset")


def add_commands(subparsers: Any) -> None:
    from lawlab.cli.main import subcommand  # the common options (--plugin, -q, -v) too

    p = subcommand(subparsers, "fit", "Fit compression laws to a study's results or a results CSV.",
             "lawlab fit runs/quickstart --group-by pooled --group-by model --bootstrap 1000")
    _source_args(p)
    p.add_argument("--law", action="append", default=[], metavar="FORM",
                   help="law form to fit (repeatable; default: the study's laws, else compression-law for "
                        "intrinsic/extrinsic rows and runtime-law for runtime rows)")
    p.add_argument("--group-by", action="append", choices=GROUPS, default=[], help="grouping (repeatable; default pooled)")
    p.add_argument("--method", choices=["ols", "nls", "both"], default="ols",
                   help="ols: least squares in log space, as the paper; nls: lmfit")
    p.add_argument("--space", choices=["log", "linear"], default="log", help="residual space of nls fits")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples for intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", action="store_true", help="also print each fit's full summary")
    p.set_defaults(func=cmd_fit)

    p = subcommand(subparsers, "compare", "Compare law forms on the same data: fit, AIC/BIC, cross-validated error.",
             "lawlab compare results.csv --kind extrinsic --forms compression-law,ablation-r,kept-fraction-law")
    _source_args(p)
    p.add_argument("--forms", default="", help="comma-separated forms (default: every registered form that "
                   "fits the kind: the runtime law for runtime rows, the others for loss and accuracy)")
    p.add_argument("--method", choices=["auto", "ols", "nls"], default="auto",
                   help="auto: OLS for log-linear forms, lmfit for the others")
    p.add_argument("--space", choices=["log", "linear"], default="log")
    p.add_argument("--rank-by", choices=get_args(RankBy),
                   help="default: leave-one-model-out, or with one model leave-one-axis-setting-out (every row of one "
                        "pruning ratio × quantisation setting held out) with --quantised, else leave-one-ratio-out")
    p.add_argument("--quantised", action="store_true",
                   help="compare on float and quantised variants: the forms that declare the quantisation axis "
                        "(default forms: those); without it quantised rows are left out, as a float law needs")
    p.set_defaults(func=cmd_compare)

    p = subcommand(subparsers, "critical",
             "Critical compression ratio, least RFT size, and the best (model, r, D) for a parameter budget.",
             "lawlab critical --alpha 0.98 --beta -1.18 --gamma -0.14 --sigma 0.8")
    p.add_argument("--alpha", type=float, help="α of eq. 1 (only with --L0, for a threshold on L/L0)")
    p.add_argument("--beta", type=float, help="β of eq. 1")
    p.add_argument("--gamma", type=float, help="γ of eq. 1 (for the least RFT size)")
    p.add_argument("--L0", type=float, help="base value, to put the threshold on L/L0 instead of L/L0^α")
    p.add_argument("--metric", choices=["accuracy", "loss"], default="accuracy")
    p.add_argument("--sigma", type=float, action="append", default=[], help="recovery threshold (repeatable)")
    p.add_argument("--r", type=float, action="append", default=[], help="ratios for the least D (repeatable)")
    p.add_argument("--epsilon", type=float, default=1.0, help="ε of the RFT term")
    p.add_argument("--d-unit", type=float, default=1.0, help="D unit of the law (1: samples)")
    p.add_argument("--fits", type=Path, help="a fits file of `lawlab fit`, or a study folder (its analysis.json): use its fitted laws instead")
    p.add_argument("--law", help="with --fits: only this law label or form")
    p.add_argument("--curve", action="store_true", help="r_crit over a grid of σ (the paper's Fig. 5)")
    p.add_argument("--budget", type=float, help="RQ4: parameter budget; needs --fits with per-model fits and --params")
    p.add_argument("--params", action="append", default=[], metavar="MODEL=COUNT", help="parameter count of a model")
    p.add_argument("--target", type=float, help="RQ4: the value to reach (accuracy ≥ target, loss ≤ target)")
    p.add_argument("--json", type=Path, help="write the results here (default: critical.json next to --fits)")
    p.set_defaults(func=cmd_critical)

    p = subcommand(subparsers, "findings", "Answer the paper's research questions (RQ1-RQ5, laws) for a study.",
                   "lawlab findings runs/quickstart --json findings.json")
    p.add_argument("source", type=Path, help="a study's output folder or a results CSV (lawlab export)")
    p.add_argument("--json", type=Path, help="also write the findings here as JSON")
    p.set_defaults(func=cmd_findings)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="a study's output folder, or a results CSV")
    p.add_argument("--kind", choices=KINDS, help="metric kind: selects rows, and labels CSV rows that have no kind")
    p.add_argument("--ratio", choices=["nominal", "effective"], default="nominal",
                   help="nominal r (the paper) or the fraction of parameters actually removed")
    p.add_argument("--option", action="append", default=[], metavar="[FORM.]KEY=VALUE",
                   help="a form option, e.g. --option epsilon=1 or --option compression-law.d_unit=1000")
    p.add_argument("-o", "--out", type=Path, help="JSON file to write (default: next to the source)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out (and list) rows a law cannot use instead of stopping (exit 2) at them")


# --------------------------------------------------------------------------- helpers


def _console() -> Any:
    from lawlab.terminal import console

    return console()


def _fail(message: str) -> None:
    from lawlab.errors import UsageError

    raise UsageError(message)


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The source's rows, each checked; a bad row stops the command (exit 2) with its
    line, unless --skip-bad-rows, which leaves it out and lists it."""
    from lawlab.laws.data import position, read_results_csv, row_problems
    from lawlab.laws.forms import LawFitError

    src: Path = args.source
    bad: list[str] = []
    if src.is_dir():
        from lawlab.run.store import load_table

        rows = []  # load_table says when the folder is not a study's
        for i, row in enumerate(load_table(src)):
            problems = row_problems(row)
            if problems:
                bad.append(f"{src}, {position(row, i)}: {'; '.join(problems)}")
            else:
                rows.append(row)
    elif not src.exists():
        _fail(f"{src}: no such file or study folder")
    else:
        try:
            rows = read_results_csv(src, kind=args.kind, bad=bad)
        except LawFitError as exc:
            _fail(str(exc))
    if bad and not args.skip_bad_rows:
        more = f" (and {len(bad) - 1} more bad row(s))" if len(bad) > 1 else ""
        _fail(f"{bad[0]}{more}; fix the data, or pass --skip-bad-rows to leave such rows out")
    if bad:
        console = _console()
        console.print(f"skipped {len(bad)} row(s) a law cannot use (--skip-bad-rows):", highlight=False)
        for line in bad:
            console.print(f"  {line}", markup=False, highlight=False)
    if not rows:
        _fail(f"{src}: no rows to fit" + (" (every row was bad)" if bad else " (only a header)"))
    return rows


def _prepared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the study's analysis reads them (:func:`lawlab.analysis.prepare_rows`): the
    chance rule applied, said here when it leaves anything out, and L0's errors attached."""
    from lawlab.analysis import prepare_rows

    prepared, chance = prepare_rows(rows)
    if chance["left_out"]:
        _console().print("left out as not above chance on the unpruned model (one-sided binomial test): "
                         + ", ".join(chance["left_out"]), highlight=False)
    return prepared


def _form_names(registry: Any, names: list[str], flag: str) -> None:
    """Every named law form is registered, or one line naming the flag and the forms there are."""
    for name in names:
        if not registry.has("law_forms", name):
            try:
                registry.get("law_forms", name)
            except KeyError as exc:
                _fail(f"{flag} {name!r}: {exc.args[0]}")


def _out_path(args: argparse.Namespace, what: str) -> Path:
    if args.out:
        return args.out
    src: Path = args.source
    return src / f"{what}.json" if src.is_dir() else src.with_suffix(f".{what}.json")


def _write(path: Path, payload: Any) -> None:
    from lawlab.files import write_json

    write_json(path, payload)


def _options(items: list[str], form: str) -> dict[str, Any]:
    """``KEY=VALUE`` for every form, ``FORM.KEY=VALUE`` for one; values read as JSON when they can be."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            _fail(f"--option {item!r}: expected KEY=VALUE")
        target, _, name = key.rpartition(".")
        if target and target != form:
            continue
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def _registry(args: argparse.Namespace) -> Any:
    from lawlab.registry import get_registry

    return get_registry(args.plugin)


def _study_laws(src: Path) -> list[Any]:
    """The laws of the spec the study last ran with (spec.json), if it has any."""
    from lawlab.spec.models import LawEntry

    path = src / "spec.json"
    if not src.is_dir() or not path.exists():
        return []
    return [LawEntry.model_validate(law) for law in json.loads(path.read_text()).get("laws", [])]


# --------------------------------------------------------------------------- fit


def cmd_fit(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lawlab.laws.fit import fit_study, print_fits
    from lawlab.laws.forms import main_law
    from lawlab.spec.models import LawEntry

    registry = _registry(args)
    _form_names(registry, args.law, "--law")
    if _study_defaults(args):
        return _print_analysis_fits(args, registry)
    rows = _prepared(_rows(args))
    kinds = _kinds(args, rows)
    laws = [] if args.law else _study_laws(args.source)
    if args.kind:
        laws = [law for law in laws if law.metric == args.kind]
    if not laws:
        forms = args.law or []
        try:
            for kind in kinds:
                for form in forms or [main_law(kind, registry)]:
                    laws.append(LawEntry(
                        form=form, metric=kind, group_by=args.group_by or ["pooled"], fit=args.method,
                        space=args.space, ratio=args.ratio, bootstrap=args.bootstrap,
                        params=_options(args.option, form),
                    ))
        except ValidationError as exc:
            _fail(_one_line(exc, "--law"))
    _form_names(registry, [law.form for law in laws], "the study's law")
    try:
        fits = fit_study(rows, laws, registry, seed=args.seed)
    except ValidationError as exc:
        _fail(_one_line(exc, "--option"))
    console = _console()
    print_fits(fits, console)
    if args.summary:
        for f in fits:
            console.print(f.summary(), markup=False, highlight=False)
    path = _out_path(args, "fits")
    _write(path, [f.to_dict() for f in fits])
    console.print(f"fits: {path}")
    if all(f.skipped for f in fits):
        # Nothing was fitted: a script must notice (each reason is in the table above).
        _console_err(f"error: no law could be fitted to {args.source} ({len(fits)} fit(s) skipped; see above)")
        return 1
    return 0


def _study_defaults(args: argparse.Namespace) -> bool:
    """A study folder asked with no option of its own: the answer is its one analysis."""
    return (args.source.is_dir() and not args.law and not args.group_by and args.method == "ols"
            and args.space == "log" and not args.bootstrap and args.ratio == "nominal" and not args.option
            and not args.kind and not args.summary)


def _analysis(args: argparse.Namespace, registry: Any) -> Any:
    from lawlab.analysis import study_analysis

    return study_analysis(args.source, registry)


def _print_analysis_fits(args: argparse.Namespace, registry: Any) -> int:
    from lawlab.analysis import ANALYSIS_FILE
    from lawlab.laws.fit import print_fits

    analysis = _analysis(args, registry)
    console = _console()
    if not analysis.fits:
        _fail(f"{args.source}: the study's spec has no laws; name one with --law (e.g. --law "
              f"{', --law '.join(sorted(registry.names('law_forms')))})")
    print_fits(analysis.fits, console)
    console.print(f"fits: {args.source / ANALYSIS_FILE} (the study's one analysis; options such as --group-by "
                  "or --law fit anew)", highlight=False)
    if all(f.skipped for f in analysis.fits):
        _console_err(f"error: no law could be fitted to {args.source} ({len(analysis.fits)} fit(s) skipped; see above)")
        return 1
    return 0


def _console_err(message: str) -> None:
    from lawlab.terminal import console

    console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)


def _one_line(exc: Any, flag: str) -> str:
    """A pydantic error as one line: the flag, what was given, what is allowed. A law
    entry's own field is its flag (bootstrap → --bootstrap); a form's option is --option."""
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        if loc and loc[0] == "params":
            loc = loc[1:]
        elif loc and flag == "--law" and loc[0] in _LAW_FLAGS:
            parts.append(f"{_LAW_FLAGS[loc[0]]} {e.get('input')!r}: {e.get('msg')}")
            continue
        where = ".".join(loc)
        parts.append(f"{flag} {where}={e.get('input')!r}: {e.get('msg')}" if where else f"{flag}: {e.get('msg')}")
    return "; ".join(parts)


# LawEntry fields that `lawlab fit` sets from a flag
_LAW_FLAGS = {"bootstrap": "--bootstrap", "group_by": "--group-by", "fit": "--method", "space": "--space",
              "ratio": "--ratio", "form": "--law", "metric": "--kind"}


def _kinds(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[MetricKind]:
    """The metric kinds to fit: --kind, else those the rows carry (one line if none)."""
    if args.kind:
        return [args.kind]
    found = {str(r.get("kind") or "") for r in rows}
    kinds = sorted(k for k in KINDS if k in found)
    if not kinds:
        other = sorted(found - {""})
        said = f"the rows' kind column says {', '.join(map(repr, other))}" if other else "the rows carry no kind"
        _fail(f"{args.source}: {said}, and a law needs intrinsic, extrinsic or runtime: pass --kind "
              "intrinsic|extrinsic|runtime")
    return kinds


# --------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    registry = _registry(args)
    given = [f.strip() for f in args.forms.split(",") if f.strip()]
    _form_names(registry, given, "--forms")
    if (args.source.is_dir() and not given and args.method == "auto" and args.space == "log" and not args.rank_by
            and args.ratio == "nominal" and not args.option and not args.quantised):
        return _print_analysis_comparisons(args, registry)
    rows = _prepared(_rows(args))
    kinds = _kinds(args, rows)
    axes = ("quant",) if args.quantised else ()
    for kind in kinds:  # forms are compared on one kind of metric at a time
        _compare_kind(args, registry, rows, kind, given or _default_forms(registry, kind, axes), len(kinds) > 1)
    return 0


def _default_forms(registry: Any, kind: str, axes: tuple[str, ...] = ()) -> list[str]:
    """Every registered form that declares it can describe this kind across these axes, the law first."""
    from lawlab.laws.forms import compared_forms

    return compared_forms(kind, registry, axes)


def _print_analysis_comparisons(args: argparse.Namespace, registry: Any) -> int:
    from lawlab.analysis import ANALYSIS_FILE

    analysis = _analysis(args, registry)
    # --kind intrinsic: the float comparison and, where the study quantised, the cross-axis one
    kinds = [k for k, t in analysis.comparisons.items() if not args.kind or t.metric_kind == args.kind]
    if not kinds:
        _fail(f"no {args.kind or 'law'} rows to compare in {args.source}")
    console = _console()
    for kind in kinds:
        table = analysis.comparisons[kind]
        n = table.rows[0].fit.n if table.rows else 0
        rows = f"{kind} rows" if kind == table.metric_kind else f"{table.metric_kind} rows, quantised included"
        _show_comparison(table, f"law forms on {n} {rows}, ranked by {table.rank_by}", console)
    console.print(f"comparison: {args.source / ANALYSIS_FILE} (the study's one analysis; --forms, --rank-by or "
                  "--option compare anew)", highlight=False)
    return 0


def _rank_by(args: argparse.Namespace, rows: list[dict[str, Any]]) -> tuple[RankBy, str]:
    """The ranking asked for, or (by default) the first that can apply to these rows, and why."""
    if args.rank_by:
        return args.rank_by, ""
    if len({str(r.get("model")) for r in rows}) > 1:
        return "leave-one-model-out", ""
    if any(r.get("quant") for r in rows):
        return "leave-one-axis-setting-out", " (one model: leave-one-model-out cannot apply)"
    if len({str(r.get("ratio")) for r in rows}) > 1:
        return "leave-one-ratio-out", " (one model: leave-one-model-out cannot apply)"
    return "aic", " (one model and one ratio: no cross-validation applies)"


def _compare_kind(args: argparse.Namespace, registry: Any, all_rows: list[dict[str, Any]], kind: str,
                  forms: list[str], several: bool) -> None:
    from pydantic import ValidationError

    from lawlab.laws.compare import compare_forms
    from lawlab.laws.data import law_rows
    from lawlab.laws.forms import LawFitError

    rows = law_rows(all_rows, kind, ("quant",) if args.quantised else ())
    if not rows:
        _fail(f"no {kind} rows to fit in {args.source}")
    rank_by, why = _rank_by(args, rows)
    try:
        table = compare_forms(rows, forms, metric_kind=kind, method=args.method, space=args.space,
                              ratio=args.ratio, options={f: _options(args.option, f) for f in forms},
                              rank_by=rank_by, registry=registry)
    except LawFitError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail(_one_line(exc, "--option"))
    console = _console()
    _show_comparison(table, f"law forms on {len(rows)} {kind} rows, ranked by {rank_by}{why}", console)
    path = _out_path(args, f"compare-{kind}")
    if args.out and several:
        path = path.with_suffix(f".{kind}{path.suffix}")
    _write(path, table.to_dict())
    console.print(f"comparison: {path}")


def _show_comparison(table: Any, title: str, console: Any) -> None:
    """A form comparison as rich tables (split in two on a narrow terminal), and its notes."""
    from lawlab.laws.compare import CV_SCHEMES, SCHEME_SHORT
    from lawlab.terminal import narrowest_width, words_whole

    kind, rank_by = table.metric_kind, table.rank_by
    # leave-one-axis-setting-out is shown where some form has it (quantised rows)
    schemes = [k for k in CV_SCHEMES if k != "leave-one-axis-setting-out"
               or any(r.cv.get(k, {}).get("folds") for r in table.rows)]
    cv_cols = tuple(f"{SCHEME_SHORT[k]} RMSE" for k in schemes)
    cols = ("#", "form", "fit", "k", "adj. R²", "adj. R² (centred)", "F", "AIC", "BIC", *cv_cols, "feasible")
    cells = []
    for i, r in enumerate(table.rows, 1):
        f = r.fit
        if f.skipped:
            cells.append([str(i), r.form, r.method, str(r.n_params), f"[dim]not fitted: {f.skipped}[/dim]",
                          *[""] * (len(cols) - 5)])
            continue
        cv = [_num(r.cv.get(k, {}).get("rmse"), ".4g") + _folds(r.cv.get(k, {})) for k in schemes]
        cells.append([str(i), r.form, r.method, str(r.n_params),
                      _num(f.r2_adj, ".4f") + (" (u)" if f.r2_kind == "uncentred" else ""),
                      _num(r.r2_centred_adj, ".4f"), _num(f.fstat, ".4g"), _num(f.aic, ".1f"), _num(f.bic, ".1f"),
                      *cv, "yes" if not f.feasibility else "[red]no[/red]: " + "; ".join(f.feasibility)])
    whole = _columns_table(title, cols, cells, cols)
    if narrowest_width(words_whole(whole, console.width)) <= console.width:
        console.print(whole)
    else:  # a narrow terminal: goodness of fit, then the ranking criteria, each with the form's name
        console.print(words_whole(_columns_table(title + ": fit", cols, cells, (
            "#", "form", "k", "adj. R²", "adj. R² (centred)", "F", "feasible")), console.width))
        console.print(words_whole(_columns_table(f"{kind}: selection criteria", cols, cells, (
            "#", "form", "fit", "AIC", "BIC", *cv_cols)), console.width))
    for note in table.notes:
        console.print(_wrap(f"note: {note}", console.width), markup=False, highlight=False)
    for scheme in schemes:  # a scheme that cannot apply ("-" in every row) says why, once
        reasons = {r.cv[scheme].get("reason") for r in table.rows if scheme in r.cv}
        if len(reasons) == 1 and (reason := reasons.pop()):
            ranked = ", so the forms are not ranked by it (try another --rank-by)" if scheme == rank_by else ""
            console.print(_wrap(f"note: no {scheme} RMSE ({reason}){ranked}", console.width), markup=False,
                          highlight=False)


def _columns_table(title: str, cols: tuple[str, ...], cells: list[list[str]], keep: tuple[str, ...]) -> Any:
    """A table of some of the columns ``cols`` names, over the same rows."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    idx = [cols.index(c) for c in keep]
    for c in keep:
        t.add_column(c, justify="left" if c in ("form", "fit", "feasible") else "right")
    for row in cells:
        t.add_row(*(row[i] for i in idx))
    return t


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _folds(cv: dict[str, Any]) -> str:
    return f" ({len(cv['failed'])} folds failed)" if cv.get("failed") else ""


# --------------------------------------------------------------------------- critical


def cmd_findings(args: argparse.Namespace) -> int:
    from lawlab.findings.rows import read_rows
    from lawlab.findings.stage import study_findings

    if not args.source.is_dir() and not read_rows(args.source):
        # a header alone answers nothing: say so with the exit code, not with six "undetermined"
        _fail(f"{args.source}: no result rows (only a header)")
    result = study_findings(args.source)
    print(_wrap(result.summary()), end="")
    if args.json:
        _write(args.json, result.to_dict())
    return 0


def cmd_critical(args: argparse.Namespace) -> int:
    from lawlab.laws.critical import CriticalRangeError

    for s in args.sigma:
        if not (math.isfinite(s) and s > 0):
            _fail(f"--sigma {s:g}: a recovery threshold is a ratio L/L0^α, so it must be > 0")
    for r in args.r:
        if not 0 <= r < 1:
            _fail(f"--r {r:g}: a compression ratio is in [0, 1)")
    for name in ("epsilon", "d_unit", "budget"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            _fail(f"--{name.replace('_', '-')} {v:g}: must be > 0")
    console = _console()
    try:
        if args.fits:
            payload = _critical_from_fits(args, console)
        else:
            payload = _critical_from_coefficients(args, console)
    except CriticalRangeError as exc:
        _fail(str(exc))
    path = args.json or (_fits_path(args.fits).with_name("critical.json") if args.fits else None)
    if path is not None:
        _write(path, payload)
        console.print(f"critical: {path}")
    return 0


def _ratios(args: argparse.Namespace) -> list[float]:
    return args.r or [0.1, 0.3, 0.5, 0.7, 0.9]


def _critical_from_coefficients(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    from rich.table import Table

    from lawlab.laws.critical import (
        CriticalRangeError,
        check_signs,
        default_sigmas,
        min_rft_samples,
        r_crit,
        recoverable_everywhere,
    )

    if args.beta is None:
        _fail("give --beta (and --gamma for the least RFT size), or --fits with a fitted run")
    beta = args.beta
    check_signs(args.metric, beta, args.gamma)
    console.print(f"2^β = 2^{beta:g} ≈ {2**beta:.3f}  ({args.metric}: a critical ratio exists for σ "
                  f"{'≥' if args.metric == 'accuracy' else '≤'} {2**beta:.3f})")
    sigmas = args.sigma or default_sigmas(beta, args.metric)
    rs = _ratios(args)
    t = Table(title="critical compression ratio and least RFT size D at each r (Theorem 3.1, Corollary 3.2)",
              title_justify="left")
    t.add_column("σ", justify="right")
    t.add_column("r_crit", justify="right")
    if args.gamma is not None:
        for r in rs:
            t.add_column(f"D at r={r:g}", justify="right")
    results = []
    for s in sigmas:
        entry: dict[str, Any] = {"sigma": s}
        if recoverable_everywhere(beta, s, args.metric):  # raises for a σ or β out of range
            entry["r_crit"], entry["reason"] = None, "every r in (0, 1) can be recovered: no critical ratio"
            cell = "none: every r recoverable"
        else:
            entry["r_crit"] = r_crit(beta, s, args.metric)
            cell = f"{entry['r_crit']:.3f}"
        row = [f"{s:g}", cell]
        if args.gamma is not None:
            entry["least_D"] = {}
            for r in rs:
                try:
                    d = min_rft_samples(r, s, beta=beta, gamma=args.gamma, alpha=args.alpha if args.L0 else None,
                                        L0=args.L0, eps=args.epsilon, d_unit=args.d_unit, metric=args.metric)
                    row.append(_d_text(d))
                    entry["least_D"][str(r)] = None if math.isinf(d) else d
                except CriticalRangeError as exc:
                    row.append("-")
                    entry["least_D"][str(r)] = None
                    entry.setdefault("reason", str(exc))
        t.add_row(*row)
        results.append(entry)
    _print_critical(console, t)
    for e in results:
        if e["r_crit"] is not None:
            console.print(f"r_crit({e['sigma']:g}) = {e['sigma']:g}^(1/{beta:g}) − 1 ≈ {e['r_crit']:.3f}")
    return {"beta": beta, "gamma": args.gamma, "alpha": args.alpha, "metric": args.metric, "two_to_beta": 2**beta,
            "results": results}


def _wrap(text: str, width: int | None = None) -> str:
    """Prose lines folded to the console's width (the terminal's; off a terminal as wide
    as the text unless COLUMNS says), continuations indented under their line."""
    import textwrap

    width = max(40, (width or _console().width) - 1)
    out = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        indent = " " * (len(line) - len(body))
        hang = indent + ("  " if body.startswith("- ") or indent else "    ")
        out.append(textwrap.fill(body, width, initial_indent=indent, subsequent_indent=hang,
                                 break_long_words=False, break_on_hyphens=False) if len(line) > width else line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


# What an r_crit cell says when there is no critical ratio, by CriticalRangeError.outcome.
_OUTCOME_CELL = {
    "recoverable": "none: every r recoverable",
    "unreachable": "none: no r reaches σ",
    "infeasible": "none: β breaks the sign rule",
}


def _d_text(d: float) -> str:
    return "none" if math.isinf(d) else f"{d:,.0f}"


def _print_critical(console: Any, t: Any) -> None:
    """A critical-ratio table with no word cut, and what "none" and "-" mean, once."""
    from lawlab.terminal import words_whole

    console.print(words_whole(t, console.width))
    cells = {str(c) for col in t.columns[2:] for c in col.cells}
    if any(c == "none" or c.startswith("none ") for c in cells):
        console.print("none: r ≥ r_crit(σ), so no RFT size D reaches σ")
    if "-" in cells:
        console.print("-: no least D for this σ (see the note on σ)")


def _fits_path(p: Path) -> Path:
    from lawlab.analysis import ANALYSIS_FILE

    return p / ANALYSIS_FILE if p.is_dir() else p


def _load_fits(args: argparse.Namespace) -> list[Any]:
    from lawlab.laws.results import FitResult

    path = _fits_path(args.fits)
    if args.fits.is_dir():  # a study folder: its one analysis (computed if the stored numbers changed)
        from lawlab.analysis import study_analysis

        fits = study_analysis(args.fits, _registry(args)).fits
    elif not path.exists():
        _fail(f"{path}: no fits file (run `lawlab fit` first)")
    else:
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            # a fits file of `lawlab fit`, or a study's analysis.json
            fits = [FitResult.from_dict(d) for d in (payload["fits"] if isinstance(payload, dict) else payload)]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            _fail(f"{path}: not a fits file written by `lawlab fit` ({type(exc).__name__}: {exc})")
    runtime = [f for f in fits if f.metric_kind == "runtime" and (not args.law or args.law in (f.law, f.form))]
    if runtime:  # a runtime law has no recovery threshold: never give it a critical ratio
        names = sorted({f.law or f.form for f in runtime})
        _console().print(f"not used: {', '.join(names)} (runtime: a recovery threshold and a critical ratio "
                         "are defined for loss and accuracy laws only)", highlight=False)
    fits = [f for f in fits if not f.skipped and "beta" in f.theta and f.metric_kind != "runtime"]
    if args.law:
        fits = [f for f in fits if args.law in (f.law, f.form)]
    if not fits:
        _fail(f"{path}: no fitted loss or accuracy law with a β" + (f" for {args.law!r}" if args.law else ""))
    return fits


def _critical_from_fits(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    from rich.table import Table

    from lawlab.laws.critical import CriticalRangeError, default_sigmas, min_rft_from_fit, r_crit_curve
    from lawlab.laws.forms import LEVEL

    fits = _load_fits(args)
    if args.budget is not None:
        return _budget(args, fits, console)
    payload = []
    unreachable: list[str] = []  # a typed σ no law can reach: exit 2 if that is all there is
    answered = 0
    for f in fits:
        group = f.group_label
        beta = f.theta["beta"]
        try:
            sigmas = args.sigma or default_sigmas(beta, f.rule, n=9 if args.curve else 3)
        except CriticalRangeError as exc:
            console.print(f"{f.law or f.form} {group}: {exc}", highlight=False)
            continue
        console.print(f"[bold]{f.law or f.form}[/bold] · {group} · {f.method}: β = {beta:.3f}, "
                      f"2^β ≈ {2**beta:.3f} ({f.metric_kind}: {f.rule} thresholds)", highlight=False)
        rs = _ratios(args) if "gamma" in f.theta else []
        t = Table(title="critical ratio and least RFT size D at each r" if rs else None, title_justify="left")
        t.add_column("σ", justify="right")
        t.add_column(f"r_crit ({LEVEL:.0%} interval)", justify="right")
        for r in rs:
            t.add_column(f"D at r={r:g}", justify="right")
        curve = r_crit_curve(f, sigmas)
        entries = []
        for point in curve:
            s = point["sigma"]
            if point["outcome"] == "unreachable":
                unreachable.append(f"{f.law or f.form} ({group}): {point['reason']}")
            else:
                answered += 1
            cell = _OUTCOME_CELL.get(point["outcome"], "-") if point["r_crit"] is None else (
                f"{point['r_crit']:.3f}" + (f" [{point['low']:.3f}, {point['high']:.3f}]" if point["low"] is not None else ""))
            row, least = [f"{s:.3g}", cell], {}
            for r in rs:
                try:
                    iv = min_rft_from_fit(f, r, s)
                    text = _d_text(iv.value)
                    if iv.low is not None and iv.high is not None:  # a bootstrap sets both
                        text += f" [{_d_text(iv.low)}, {_d_text(iv.high)}]"
                    least[str(r)] = {"value": iv.value, "low": iv.low, "high": iv.high}
                except CriticalRangeError:
                    text = "-"
                row.append(text)
            t.add_row(*row)
            entries.append({**point, "least_D": least})
        _print_critical(console, t)
        for reason in sorted({p["reason"] for p in curve if p["reason"] and p["outcome"] != "recoverable"}):
            console.print(_wrap(f"note: {reason}", console.width), markup=False, highlight=False)
        payload.append({"law": f.law, "form": f.form, "group": f.group, "method": f.method, "metric": f.rule,
                        "metric_kind": f.metric_kind, "beta": beta, "two_to_beta": 2**beta,
                        "points": jsonable(entries)})
    if unreachable and not answered:
        _fail(f"--sigma: {unreachable[0]}" + (f" (and {len(unreachable) - 1} more)" if len(unreachable) > 1 else ""))
    return {"fits": str(_fits_path(args.fits)), "results": payload}


def _budget(args: argparse.Namespace, fits: list[Any], console: Any) -> dict[str, Any]:
    from rich.table import Table

    from lawlab.laws.critical import best_configuration

    counts = {}
    for item in args.params:
        model, sep, n = item.partition("=")
        try:
            counts[model] = float(n.replace("_", "")) if sep else math.nan
        except ValueError:
            counts[model] = math.nan
        if not (sep and model and math.isfinite(counts[model]) and counts[model] > 0):
            _fail(f"--params {item!r}: expected MODEL=COUNT with a positive number, e.g. llama-8b=8.03e9")
    per_model = {f.group["value"]: f for f in fits if f.group.get("by") == "model"}
    pooled = [f for f in fits if f.group.get("by") == "pooled"]
    if not per_model and pooled:
        per_model = dict.fromkeys(counts, pooled[0])
    per_model = {m: f for m, f in per_model.items() if m in counts}
    if not per_model:
        _fail("--budget needs --params MODEL=COUNT for models that have a fit (per-model fits, or one pooled fit)")
    answer = best_configuration(per_model, counts, args.budget, target=args.target)
    t = Table(title=f"RQ4: configurations within {args.budget:,.0f} parameters, best predicted first",
              title_justify="left")
    for col in ("model", "r", "D", "params kept", "predicted", "interval", "meets target"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for c in answer.candidates[:20]:
        t.add_row(c.model, f"{c.r:.3g}", f"{c.D:,.0f}", f"{c.params_kept:,.0f}", f"{c.predicted:.4g}",
                  f"[{c.low:.4g}, {c.high:.4g}]" if c.low is not None else "-",
                  "-" if c.meets_target is None else ("yes" if c.meets_target else "no"))
    console.print(t)
    best = answer.best
    console.print(f"best: {best.model} at r = {best.r:.3g}, D = {best.D:,.0f} (predicted {best.predicted:.4g})"
                  if best else "no configuration meets the target within the budget")
    for n in answer.notes:
        console.print(f"note: {n}")
    return jsonable({"budget": answer.budget, "target": answer.target, "metric": answer.metric,
                      "best": best.__dict__ if best else None, "candidates": [c.__dict__ for c in answer.candidates],
                      "notes": answer.notes})

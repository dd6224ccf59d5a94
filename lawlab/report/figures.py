"""The report's figures: one per question the paper asks, for whatever the study has.

Each ``figure_*`` function takes the gathered study (:class:`lawlab.report.gather.StudyData`)
and returns a :class:`Drawing`: a matplotlib figure, or the reason it could not be drawn.
Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot),
so no GUI backend and no global state is involved; PNG and SVG are rendered by Agg.

Style rules, for print and colour-blind readers: the Okabe–Ito palette in an order that
keeps yellow last, a distinct marker per model and a distinct line style per method or
RFT setting, so no distinction rests on colour alone; every axis says its unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lawlab.files import slug

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lawlab.laws.results import FitResult
    from lawlab.report.gather import StudyData

# Okabe & Ito (2008): blue, vermillion, bluish green, orange, reddish purple, sky blue, black, yellow
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "epsilon": "ε", "sigma": "σ"}
UNITS = {  # axis labels: short enough for a panel 3 inches wide
    "intrinsic": "cross-entropy (nats/token)",
    "extrinsic": "mean accuracy (fraction)",
    "runtime": "runtime (s)",
}
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "lawlab",  # reproducible SVG ids
    "svg.fonttype": "none",  # text stays text in SVG: searchable and small
}


@dataclass
class Drawing:
    name: str  # file stem under figures/
    title: str
    caption: str
    figure: Figure | None = None
    missing: str | None = None  # why it was not drawn
    notes: list[str] = field(default_factory=list)


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def model_colour(study: StudyData, model: str, fallback: int) -> str:
    """A model's colour: its place in the study, the same in every figure."""
    return colour(study.models.index(model) if model in study.models else fallback)


def unit(study: StudyData, kind: str) -> str:
    """What a metric's axis shows: runtime measured as paired ratios has no seconds."""
    runtime = [r for r in study.rows if r["kind"] == "runtime"]
    if kind == "runtime" and runtime and all(r["details"].get("paired") for r in runtime):
        return "time relative to the unpruned model (×)"
    return UNITS.get(kind, "metric")


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def linestyle(i: int) -> str:
    return LINESTYLES[i % len(LINESTYLES)]


def new_figure(n_rows: int, n_cols: int, *, width: float = 3.4, height: float = 2.7) -> tuple[Figure, list[list[Axes]]]:
    """A figure of panels; always a 2-D list of axes, whatever the shape."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_cols + 0.6, height * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, [list(row) for row in axes]


def legend_below(fig: Figure, axes: Iterable[Axes], ncol: int = 4) -> None:
    """One legend for the figure, below the panels, without duplicated entries."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(ncol, len(seen)),
                   frameon=False)


# --------------------------------------------------------------------------- selecting data


def points(study: StudyData, kind: str) -> list[dict[str, Any]]:
    """The numbers a law of ``kind`` describes, base rows (r = 0, no RFT) included: the rows
    the analysis fitted (the chance rule applied), so a figure shows what the laws describe."""
    rows = study.law_rows or study.rows
    return [r for r in rows if r["kind"] == kind and r.get("law_input", True) and r["value"] is not None]


def series_title(rows: Sequence[dict[str, Any]]) -> str:
    """What one panel's numbers are: a test set, or an evaluator's mean named by the tasks it
    holds (after the chance rule: per model, the tasks above chance)."""
    first = rows[0]
    held = {r["model"]: tuple(r["details"].get("tasks") or ()) for r in rows if r.get("details")}
    if not any(held.values()):
        return str(first["dataset"])
    kinds = set(held.values())
    tasks = "+".join(kinds.pop()) if len(kinds) == 1 else "the tasks above chance, per model"
    return f"{first.get('evaluator') or first['dataset']}: mean of {tasks}"


def on_method(rows: Sequence[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Rows of one method; the unpruned rows (r = 0) start every method's curve."""
    return [r for r in rows if r["method"] in (method, "")]


def mean_by(rows: Iterable[dict[str, Any]], key: str) -> dict[Any, float]:
    acc: dict[Any, list[float]] = {}
    for r in rows:
        acc.setdefault(r[key], []).append(float(r["value"]))
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


def max_size(rows: Iterable[dict[str, Any]]) -> int:
    return max((int(r["D"]) for r in rows), default=0)


def preferred(fits: Sequence[FitResult]) -> list[FitResult]:
    """Fitted (not skipped) results, OLS before NLS for the same law and group."""
    done = [f for f in fits if not f.skipped]
    chosen: dict[tuple[str, str, str], FitResult] = {}
    for f in sorted(done, key=lambda f: f.method != "ols"):
        chosen.setdefault((f.law, f.group.get("by", ""), f.group.get("value", "")), f)
    return list(chosen.values())


def fits_for(study: StudyData, metric: str, by: str, *, needs: Sequence[str] = ()) -> list[FitResult]:
    """The fits of the first law of ``metric`` that is grouped ``by`` (paper forms first)."""
    candidates = [f for f in preferred(study.fits) if f.metric_kind == metric and f.group.get("by") == by
                  and all(n in f.theta for n in needs)]
    if not candidates:
        return []
    law = min(candidates, key=lambda f: (_role_rank(f), study.law_order(f.law))).law
    return [f for f in candidates if f.law == law]


def _role_rank(f: FitResult) -> int:
    """The law of its kind first (the form that declares ``role = "law"``), then the others."""
    form = f._form
    if form is None:
        from lawlab.registry import get_registry

        registry = get_registry()
        form = registry.get("law_forms", f.form) if registry.has("law_forms", f.form) else None
    return 0 if form is not None and form.role == "law" else 1


def ratio_grid(rows: Iterable[dict[str, Any]], n: int = 60) -> Any:
    import numpy as np

    top = max((float(r["ratio"]) for r in rows), default=0.5)
    return np.linspace(0.0, max(top, 0.1), n)


# --------------------------------------------------------------------------- Figs. 1 and 3


def figure_vs_ratio(study: StudyData, kind: str) -> Drawing:
    """Extrinsic accuracy (Fig. 1) or intrinsic loss (Fig. 3) against r, without and with
    RFT: one panel row per test set, one line per (model, method)."""
    name = {"extrinsic": "extrinsic_vs_ratio", "intrinsic": "intrinsic_vs_ratio"}[kind]
    paper = {"extrinsic": "Figure 1", "intrinsic": "Figure 3"}[kind]
    title = f"{'Extrinsic accuracy' if kind == 'extrinsic' else 'Intrinsic loss'} vs compression ratio ({paper})"
    rows = points(study, kind)
    if not rows:
        return Drawing(name, title, "", missing=f"no {kind} measurements in the store yet")
    pruned = [r for r in rows if r["method"]]
    if not pruned:
        return Drawing(name, title, "", missing=f"only the unpruned models have {kind} measurements so far")
    # one panel row per series: two evaluators' means (30 and 400 questions) are never averaged
    series = sorted({r.get("series") or r["dataset"] for r in rows})
    top_D = max_size(rows)
    with_rft = [False, True] if top_D > 0 else [False]
    fig, axes = new_figure(len(series), len(with_rft))
    notes = []
    for i, ser in enumerate(series):
        in_series = [r for r in rows if (r.get("series") or r["dataset"]) == ser]
        label = series_title(in_series)
        for j, rft in enumerate(with_rft):
            ax = axes[i][j]
            drawn = False
            for mi, model in enumerate(study.models):
                for ki, method in enumerate(study.methods):
                    mine = [r for r in on_method(in_series, method) if r["model"] == model
                            and int(r["D"]) == (top_D if rft else 0)]
                    if not any(r["method"] for r in mine):
                        continue
                    curve = mean_by(mine, "ratio")
                    ax.plot(list(curve), list(curve.values()), color=colour(mi), marker=marker(mi),
                            linestyle=linestyle(ki), markersize=4, label=f"{model} · {method}")
                    drawn = True
            ax.set_title(f"{label}\n" + (f"with RFT (D = {top_D:,})" if rft else "without RFT"), fontsize=9)
            if not drawn:  # say so rather than draw empty axes
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            ax.set_xlabel("nominal compression ratio r")
            ax.set_ylabel(unit(study, kind) if kind != "extrinsic" else "accuracy (fraction)")
    if any(len({r.get("seed") for r in rows if r["method"] == m}) > 1 for m in study.methods):
        notes.append("Where a method pruned with several seeds, each point is their mean.")
    n_rft_sets = len({(r["rft"], r["rft_dataset"]) for r in rows if int(r["D"]) == top_D and top_D})
    if n_rft_sets > 1:
        notes.append(f"with RFT: the mean over {n_rft_sets} RFT training sets at D = {top_D:,}")
    legend_below(fig, (a for row in axes for a in row))
    caption = (f"{unit(study, kind).capitalize()} of each model (colour and marker) and method (line style) at each "
               f"nominal ratio r; r = 0 is the unpruned model. " + " ".join(notes))
    return Drawing(name, title, caption.strip(), fig)


# --------------------------------------------------------------------------- Figs. 2 and 6


def figure_runtime(study: StudyData) -> Drawing:
    import numpy as np

    name, title = "runtime", "Runtime and speedup vs compression ratio (Figures 2 and 6)"
    rows = [r for r in points(study, "runtime") if int(r["D"]) == 0]
    if not rows:
        return Drawing(name, title, "", missing="no runtime measurements (benchmark seconds) in the store yet")
    if not any(r["method"] for r in rows):
        return Drawing(name, title, "", missing="only the unpruned models have runtime measurements so far")
    by_model = fits_for(study, "runtime", "model")
    pooled = fits_for(study, "runtime", "pooled")
    law_of = {f.group["value"]: f for f in by_model}
    paired = all(r["details"].get("paired") for r in rows)
    fig, axes = new_figure(1, 2)
    ax_s, ax_x = axes[0]
    grid = ratio_grid(rows)
    for mi, model in enumerate(study.models):
        for ki, method in enumerate(study.methods):
            mine = [r for r in on_method(rows, method) if r["model"] == model]
            if not any(r["method"] for r in mine):
                continue
            curve = mean_by(mine, "ratio")
            base = curve.get(0.0) or next((r["L0"] for r in mine if r["L0"]), None)
            ax_s.plot(list(curve), list(curve.values()), color=colour(mi), marker=marker(mi), linestyle="none",
                      markersize=5, label=f"{model} (measured)")
            if base:
                ax_x.plot(list(curve), [base / v for v in curve.values()], color=colour(mi), marker=marker(mi),
                          linestyle=linestyle(ki), markersize=4, label=f"{model} · {method}")
                for r in mine:  # a paired ratio's interval, as a speedup
                    ci = r["details"].get("ci") if paired and r["method"] else None
                    if ci:
                        ax_x.plot([r["ratio"]] * 2, [base / ci[1], base / ci[0]], color=colour(mi), linewidth=1)
        fit = law_of.get(model) or (pooled[0] if pooled else None)
        S0 = next((r["L0"] for r in rows if r["model"] == model and r["L0"]), None)
        if fit is not None and S0:
            S = np.asarray(fit.predict(np.full_like(grid, S0), grid, np.zeros_like(grid)), float)
            which = "per-model" if model in law_of else "pooled"
            ax_s.plot(grid, S, color=colour(mi), linewidth=1.2, alpha=0.8,
                      label=f"{model}: {which} law β = {fit.theta.get('beta', float('nan')):.2f}")
    ax_s.set_xlabel("nominal compression ratio r")
    ax_s.set_ylabel(unit(study, "runtime") if paired else UNITS["runtime"])
    ax_s.set_title("runtime: measured (markers), fitted law (lines)")
    ax_x.axhline(1.0, color="grey", linewidth=0.8)
    ax_x.set_xlabel("nominal compression ratio r")
    ax_x.set_ylabel("speedup S0 / S (×)")
    ax_x.set_title("speedup over the unpruned model")
    legend_below(fig, [ax_s, ax_x], ncol=3)
    law = "; no runtime law was fitted" if not (by_model or pooled) else ""
    what = ("Time of a fixed workload relative to the unpruned model, both timed alternately in the same cell "
            "(median of the rounds' ratios)" if paired else "Total forward time over the benchmark")
    caption = (f"{what} for each model and method; lines on the left are the fitted runtime law "
               f"S = S0·C·(1+r)^β{law}. Right: speedup relative to the unpruned model"
               + (", with the paired ratio's interval." if paired else "."))
    return Drawing(name, title, caption, fig)


# --------------------------------------------------------------------------- Fig. 4: each law


def figure_law(study: StudyData, law_key: str) -> Drawing:
    """A fitted law over its measured points (Fig. 4 a–b) and the effect of D (Fig. 4 c–d)."""
    import numpy as np

    name = "law_" + slug(law_key)
    title = f"Fitted law {law_key} over the measurements (Figure 4)"
    fits = [f for f in preferred(study.fits) if f.law == law_key]
    if not fits:
        reasons = sorted({f.skipped for f in study.fits if f.law == law_key and f.skipped})
        return Drawing(name, title, "", missing="no fit of this law" + (": " + "; ".join(reasons) if reasons else ""))
    pooled = [f for f in fits if f.group.get("by") == "pooled"]
    chosen = pooled or [f for f in fits if f.group.get("by") == fits[0].group.get("by")]
    sizes = sorted({float(d) for f in chosen for d in f.data["D"]})
    has_D = len(sizes) > 1
    fig, axes = new_figure(1, 2 if has_D else 1, width=3.8, height=3.2)
    ax = axes[0][0]
    y_unit = unit(study, chosen[0].metric_kind)
    top = max(sizes)
    k = -1  # frontier counter across groups: colour and marker
    for gi, fit in enumerate(chosen):
        data = {k: np.asarray(fit.data[k], float) for k in ("L0", "r", "D", "value")}
        models = np.asarray(fit.data["model"])
        grid = np.linspace(0, max(float(data["r"].max()), 0.1), 60)
        # one frontier per distinct L0 (a model on one test set), as in the paper's Fig. 4
        frontiers = sorted({(m, float(v)) for m, v in zip(models, data["L0"], strict=True)},
                           key=lambda mv: (study.models.index(mv[0]) if mv[0] in study.models else 99, mv[1]))
        for model, L0 in frontiers:
            k += 1
            here = (models == model) & (data["L0"] == L0)
            c = model_colour(study, model, k)  # the model's colour; its test sets differ by marker
            for D, filled in ((0.0, True), (top, False)) if has_D else ((sizes[0], True),):
                pts = here & (data["D"] == D)
                ax.plot(data["r"][pts], data["value"][pts], linestyle="none", marker=marker(k), markersize=5,
                        color=c, markerfacecolor=c if filled else "white")
                pred = np.asarray(fit.predict(np.full_like(grid, L0), grid, np.full_like(grid, D)), float)
                group = "" if fit.group.get("by") == "pooled" else f" ({fit.group['value']})"
                ax.plot(grid, pred, color=c, linestyle=linestyle(gi if not has_D else int(not filled)),
                        linewidth=1.2, label=f"{model}{group}, L0 = {L0:.3g}, D = {D:,.0f}")
    ax.set_xlabel("nominal compression ratio r" if chosen[0].ratio == "nominal" else "fraction of parameters removed")
    ax.set_ylabel(y_unit)
    ax.set_title("law (lines) and measurements (markers)")
    notes = ["Filled markers: no RFT; hollow markers: the largest D."] if has_D else []
    if has_D:
        _effect_of_D(axes[0][1], chosen[0], study)
        notes.append("Right: every point rescaled by the law to a common L0 (the geometric mean of the models'), "
                     "so points of all models fall on one curve per r when the law holds.")
    legend_below(fig, [a for row in axes for a in row], ncol=3)
    fit0 = chosen[0]
    which = "pooled fit" if fit0.group.get("by") == "pooled" else f"fits per {fit0.group.get('by')}"
    caption = f"{fit0.formula}, {which} ({fit0.method.upper()}). " + " ".join(notes)
    return Drawing(name, title, caption, fig)


def _effect_of_D(ax: Axes, fit: FitResult, study: StudyData) -> None:
    import numpy as np

    L0 = np.asarray(fit.data["L0"], float)
    r = np.asarray(fit.data["r"], float)
    D = np.asarray(fit.data["D"], float)
    y = np.asarray(fit.data["value"], float)
    ref = float(np.exp(np.mean(np.log(L0))))
    scale = np.asarray(fit.predict(np.full_like(L0, ref), r, D), float) / np.asarray(fit.predict(L0, r, D), float)
    grid = np.concatenate([[0.0], np.geomspace(0.5, max(D.max(), 1.0) * 1.5, 60)])
    ratios = sorted(set(r.tolist()))
    for i, rv in enumerate(ratios):
        c = _sequential(i, len(ratios))
        here = r == rv
        ax.plot(D[here], y[here] * scale[here], linestyle="none", marker=marker(i), color=c, markersize=4)
        pred = np.asarray(fit.predict(np.full_like(grid, ref), np.full_like(grid, rv), grid), float)
        ax.plot(grid, pred, color=c, linestyle=linestyle(i), linewidth=1.1, label=f"r = {rv:g}")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("RFT size D (samples; symlog scale)")
    ax.set_ylabel(unit(study, fit.metric_kind))
    ax.set_title(f"effect of RFT size D (rescaled to L0 = {ref:.3g})")


def _sequential(i: int, n: int) -> Any:
    """Ordered values (ratios) get an ordered, colour-blind safe colour map."""
    from matplotlib import colormaps

    return colormaps["viridis"](0.05 + 0.85 * (i / max(n - 1, 1)))


# --------------------------------------------------------------------------- Fig. 5


def figure_r_crit(study: StudyData) -> Drawing:
    import numpy as np

    from lawlab.laws.critical import r_crit_curve

    name, title = "r_crit", "Critical compression ratio r_crit(σ) (Figure 5)"
    kinds = [k for k in ("intrinsic", "extrinsic") if fits_for(study, k, "pooled", needs=["beta"])
             or fits_for(study, k, "model", needs=["beta"])]
    if not kinds:
        return Drawing(name, title, "", missing="no fitted intrinsic or extrinsic law with a β (eq. 1 or eq. 2) yet")
    fig, axes = new_figure(1, len(kinds))
    notes = []
    for ax, kind in zip(axes[0], kinds, strict=True):
        fits = fits_for(study, kind, "model", needs=["beta"]) or fits_for(study, kind, "pooled", needs=["beta"])
        loss = kind == "intrinsic"
        betas = [f.theta["beta"] for f in fits]
        edges = [2**b for b in betas if (b > 0) == loss]
        if not edges:
            notes.append(f"{kind}: every β breaks the {'loss' if loss else 'accuracy'} sign rule, so r_crit is undefined")
            sigmas = np.linspace(1.01, 3, 50) if loss else np.linspace(0.3, 0.99, 50)
        else:
            # r_crit runs from 1 at σ = 2^β to 0 at σ = 1; stop just short of both ends
            edge = max(edges) if loss else min(edges)
            sigmas = 1 + (edge - 1) * np.linspace(0.995, 0.005, 80)
        drawn = 0
        for i, fit in enumerate(fits):
            curve = r_crit_curve(fit, list(sigmas))
            xs = [c["sigma"] for c in curve if c["r_crit"] is not None]
            ys = [c["r_crit"] for c in curve if c["r_crit"] is not None]
            label = fit.group["value"] if fit.group.get("by") != "pooled" else "pooled"
            if not xs:
                reason = next((c["reason"] for c in curve if c["reason"]), "")
                notes.append(f"{kind}, {label}: {reason}")
                continue
            if label in study.models:  # the model keeps its colour from the other figures
                i = study.models.index(label)
            ax.plot(xs, ys, color=colour(i), marker=marker(i), markevery=10, markersize=4, linestyle=linestyle(i),
                    label=f"{label} (β = {fit.theta['beta']:.2f})")
            lows = [c["low"] for c in curve if c["r_crit"] is not None]
            if all(v is not None for v in lows):
                highs = [c["high"] for c in curve if c["r_crit"] is not None]
                ax.fill_between(xs, lows, highs, color=colour(i), alpha=0.15, linewidth=0)
            drawn += 1
        ax.set_xlabel(f"recovery threshold σ on L / L0^α ({'> 1' if loss else '< 1'})")
        ax.set_ylabel("critical ratio r_crit")
        ax.set_title(f"{kind} ({'loss' if loss else 'accuracy'})")
        ax.set_ylim(0, 1)
        if drawn:
            ax.legend(loc="best", frameon=False)
    caption = ("r_crit(σ) = σ^(1/β) − 1 from each fitted β: beyond r_crit no amount of RFT reaches the threshold σ "
               "(Corollary 3.2; Appendix D.4 for loss). Shaded: 95% bootstrap interval where the fit has one. "
               + " ".join(notes))
    return Drawing(name, title, caption.strip(), fig)


# --------------------------------------------------------------------------- Fig. 10


def figure_per_dataset(study: StudyData) -> Drawing:
    import numpy as np

    name, title = "intrinsic_per_dataset", "Intrinsic law per test dataset (Figure 10)"
    rows = [r for r in points(study, "intrinsic") if r["method"] or r["D"]]
    datasets = sorted({r["dataset"] for r in rows})
    if len(datasets) < 2:
        what = f"only one test dataset ({datasets[0]})" if datasets else "no intrinsic measurements of compressed models"
        return Drawing(name, title, "", missing=f"{what}: nothing to compare across datasets")
    fits = {f.group["value"]: f for f in fits_for(study, "intrinsic", "dataset")}
    notes = []
    if not fits and study.analysis is not None:
        notes.append("The spec has no intrinsic law grouped by dataset: the analysis fitted eq. 1 per dataset (OLS).")
        fits = {f.group["value"]: f for f in study.analysis.extra_fits
                if f.metric_kind == "intrinsic" and f.group.get("by") == "dataset"}
        notes += [f"{ds}: not fitted (too few points)" for ds in datasets if ds not in fits]
    fig, axes = new_figure(1, len(datasets), width=3.0)
    top = max_size(rows)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == ds]
        grid = ratio_grid(mine)
        for mi, model in enumerate(study.models):
            pts = [r for r in mine if r["model"] == model]
            if not pts:
                continue
            for D, filled in ((0, True), (top, False)) if top else ((0, True),):
                sel = [r for r in pts if int(r["D"]) == D]
                ax.plot([r["ratio"] for r in sel], [r["value"] for r in sel], linestyle="none", marker=marker(mi),
                        color=colour(mi), markerfacecolor=colour(mi) if filled else "white", markersize=4)
                fit, L0 = fits.get(ds), pts[0]["L0"]
                if fit is not None and L0:
                    pred = fit.predict(np.full_like(grid, L0), grid, np.full_like(grid, D))
                    ax.plot(grid, np.asarray(pred, float), color=colour(mi), linestyle="-" if filled else "--",
                            linewidth=1.1, label=f"{model}, D = {D:,}")
        fit = fits.get(ds)
        coef = ", ".join(f"{GREEK.get(k, k)} = {v:.2f}" for k, v in fit.theta.items()) if fit else "not fitted"
        ax.set_title(f"{ds}\n{coef}", fontsize=9)
        ax.set_xlabel("nominal compression ratio r")
        ax.set_ylabel(UNITS["intrinsic"])
    legend_below(fig, axes[0], ncol=4)
    caption = ("Test cross-entropy per test set with the law fitted to that test set alone (Table 6). Filled: no RFT; "
               "hollow and dashed: the largest D. " + " ".join(notes))
    return Drawing(name, title, caption.strip(), fig)


# --------------------------------------------------------------------------- Fig. 11


def figure_calibration(study: StudyData) -> Drawing:
    name, title = "calibration", "Calibration-free vs calibration-based compression (Figure 11)"
    present = {study.calibration.get(m) for m in study.methods if any(r["method"] == m for r in study.rows)}
    if not {"free", "based"} <= present:
        have = ", ".join(sorted(p or "?" for p in present)) or "none"
        return Drawing(name, title, "", missing=f"needs both a calibration-free and a calibration-based method with "
                                                f"results; have: {have}")
    kinds = [k for k in ("intrinsic", "extrinsic") if any(r["method"] for r in points(study, k))]
    if not kinds:
        return Drawing(name, title, "", missing="no intrinsic or extrinsic measurements of pruned models yet")
    fig, axes = new_figure(1, len(kinds))
    top = max_size(study.rows)
    cal_colour = {"free": PALETTE[0], "based": PALETTE[1]}
    for ax, kind in zip(axes[0], kinds, strict=True):
        rows = [r for r in points(study, kind) if r["L0"]]
        for mi, model in enumerate(study.models):
            for method in study.methods:
                cal = study.calibration.get(method, "")
                for D, style in ((0, "-"), (top, "--")) if top else ((0, "-"),):
                    mine = [{**r, "value": r["value"] / r["L0"]} for r in on_method(rows, method)
                            if r["model"] == model and int(r["D"]) == D]
                    if not any(r["method"] for r in mine):
                        continue
                    curve = mean_by(mine, "ratio")
                    ax.plot(list(curve), list(curve.values()), color=cal_colour.get(cal, "grey"), marker=marker(mi),
                            linestyle=style, markersize=4,
                            label=f"calibration-{cal}, {'no RFT' if D == 0 else f'D = {D:,}'}")
                    ax.plot([], [], color="grey", marker=marker(mi), linestyle="none", label=model)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("nominal compression ratio r")
        ax.set_ylabel(f"{'loss' if kind == 'intrinsic' else 'accuracy'} relative to unpruned (L / L0)")
        ax.set_title(kind)
    legend_below(fig, axes[0], ncol=3)
    caption = ("Each method's metric divided by the unpruned model's (L/L0), coloured by calibration; marker: model; "
               "solid: no RFT, dashed: the largest D. Intrinsic curves average L/L0 over the test sets.")
    return Drawing(name, title, caption, fig)


# --------------------------------------------------------------------------- observed vs predicted


def figure_observed_vs_predicted(study: StudyData, kind: str) -> Drawing:
    name = f"observed_vs_predicted_{kind}"
    title = f"Observed vs predicted, every law form ({kind})"
    table = study.comparisons.get(kind)
    if table is None or not table.rows:
        return Drawing(name, title, "", missing=f"no {kind} law forms were compared")
    n = len(table.rows)
    cols = 2 if n == 4 else min(3, n)
    fig, axes = new_figure(math.ceil(n / cols), cols, width=3.0, height=2.8)
    flat = [a for row in axes for a in row]
    y_unit = unit(study, table.metric_kind)
    for ax, row in zip(flat, table.rows, strict=False):
        fit = row.fit
        ax.set_title(f"{row.form} ({row.method.upper()})", fontsize=9)
        if fit.skipped:
            ax.text(0.5, 0.5, "not fitted:\n" + _wrap(fit.skipped, 34), ha="center", va="center",
                    transform=ax.transAxes, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        obs, pred = fit.data["value"], fit.data["predicted"]
        models = fit.data["model"]
        for mi, model in enumerate(dict.fromkeys(models)):
            idx = [i for i, m in enumerate(models) if m == model]
            ax.plot([pred[i] for i in idx], [obs[i] for i in idx], linestyle="none", marker=marker(mi),
                    color=colour(mi), markersize=4, label=model)
        lo, hi = min(min(obs), min(pred)), max(max(obs), max(pred))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
        cv = row.cv
        text = (f"adj. R² {_f(fit.r2_adj)} ({fit.r2_kind[:1] or '?'})\n"
                f"LOMO RMSE {_f(cv.get('leave-one-model-out', {}).get('rmse'))}\n"
                f"LORO RMSE {_f(cv.get('leave-one-ratio-out', {}).get('rmse'))}")
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_xlabel(f"predicted {y_unit}")
        ax.set_ylabel(f"observed {y_unit}")
        ax.locator_params(nbins=5)
    for ax in flat[n:]:
        ax.set_visible(False)
    legend_below(fig, flat[:n], ncol=4)
    caption = ("Each form fitted to the same pooled rows; the grey line is observed = predicted. LOMO / LORO: RMSE of "
               "predictions for a held-out model / ratio (in the metric's units); (u) uncentred, (c) centred R².")
    return Drawing(name, title, caption, fig)


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:6])


def all_figures(study: StudyData) -> list[Drawing]:
    """Every figure the report shows, in the order it shows them (call it inside
    ``matplotlib.rc_context(STYLE)``, which must also cover saving)."""
    makers: list[tuple[str, Any]] = [
        ("extrinsic_vs_ratio", lambda: figure_vs_ratio(study, "extrinsic")),
        ("intrinsic_vs_ratio", lambda: figure_vs_ratio(study, "intrinsic")),
        ("runtime", lambda: figure_runtime(study)),
        *[(f"law_{slug(law.key)}", lambda key=law.key: figure_law(study, key)) for law in study.laws],
        ("r_crit", lambda: figure_r_crit(study)),
        ("intrinsic_per_dataset", lambda: figure_per_dataset(study)),
        ("calibration", lambda: figure_calibration(study)),
        *[(f"observed_vs_predicted_{kind}", lambda k=kind: figure_observed_vs_predicted(study, k))
          for kind in study.comparisons],
    ]
    if any(r.get("quant") for r in study.rows):
        from lawlab.report.hybrid import figure_hybrid  # here: hybrid draws with this module's helpers

        makers.append(("hybrid_tradeoff", lambda: figure_hybrid(study.rows)))
    out = []
    for name, make in makers:
        try:
            out.append(make())
        except Exception as exc:  # one odd corner of the data must not cost the whole report
            out.append(Drawing(name, f"Figure {name}", "", missing=f"drawing failed: {type(exc).__name__}: {exc}"))
    return out

"""What each quantisation setting buys: memory, speed, or neither, with the numbers.

A quantised variant is set beside the same variant in float (the same pruning at the same r
and D; at r = 0 the unpruned model): its weights in memory, its peak memory, and its time.
Times are the runtime evaluator's paired ratios to the unpruned model, so two variants are
compared through their intervals: faster only when the quantised variant's interval lies
wholly below the float one's, slower only when wholly above, otherwise unresolved.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lawlab.report.document import Section, Table, fmt

MB = 1e6
SAVES = 0.03  # weights at least 3% smaller: memory saved


def _variant(r: dict[str, Any]) -> tuple[str, float, float]:
    """The float variant a row's variant is quantised from: (pruner, r, D)."""
    ratio = float(r.get("ratio") or 0.0)
    return (str(r.get("method_plugin") or "") if ratio > 0 else "", ratio, float(r.get("D") or 0.0))


def variants(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float, float, str], dict[str, Any]]:
    """Per (pruner, r, D, setting; "" for float) the numbers this section reads."""
    out: dict[tuple[str, float, float, str], dict[str, Any]] = defaultdict(dict)
    for r in rows:
        key = (*_variant(r), str(r.get("quant") or ""))
        v = out[key]
        if r.get("bytes_in_memory") is not None:
            v["weights"] = float(r["bytes_in_memory"])
        if r.get("bits_per_weight") is not None:
            v["bits"] = float(r["bits_per_weight"])
        metric, value = r.get("metric"), r.get("value")
        if value is None:
            continue
        if metric == "relative_time":
            ci = (r.get("details") or {}).get("ci") or [value, value]  # the reference itself: exactly 1
            v["time"], v["time_ci"] = float(value), (float(ci[0]), float(ci[1]))
        elif metric in ("forward_memory_bytes", "peak_memory_bytes"):
            v[metric] = float(value)
            if metric == "peak_memory_bytes" and "weight_bytes" in (r.get("details") or {}):
                v.setdefault("weights", float(r["details"]["weight_bytes"]))
        elif r.get("kind") == "intrinsic" and metric == "cross_entropy":
            v["loss"] = float(value)
        elif r.get("kind") == "extrinsic" and r.get("law_input"):
            v["accuracy"] = float(value)
    return dict(out)


def compare(q: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
    """A quantised variant against its float one: what it buys."""
    res: dict[str, Any] = {}
    if q.get("weights") and f.get("weights"):
        res["weights_ratio"] = q["weights"] / f["weights"]
    if q.get("peak_memory_bytes") and f.get("peak_memory_bytes"):
        res["peak_ratio"] = q["peak_memory_bytes"] / f["peak_memory_bytes"]
    if "time" in q and "time" in f:
        res["time_ratio"] = q["time"] / f["time"]
        (qlo, qhi), (flo, fhi) = q["time_ci"], f["time_ci"]
        res["speed"] = "faster" if qhi < flo else "slower" if qlo > fhi else "unresolved"
    memory = res.get("weights_ratio", 1.0) < 1 - SAVES
    speed = res.get("speed")
    if memory and speed == "faster":
        res["buys"] = "memory and speed"
    elif memory:
        res["buys"] = "memory only" + (", and slower" if speed == "slower" else "")
    elif speed == "faster":
        res["buys"] = "speed only"
    else:
        res["buys"] = "neither" if speed else "not measured"
    return res


def hybrid_records(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per quantised variant with a float counterpart, in a stable order."""
    found = variants(rows)
    out = []
    for (pruner, ratio, d, setting), q in sorted(found.items()):
        f = found.get((pruner, ratio, d, ""))
        if not setting or f is None:
            continue
        out.append({"pruner": pruner or "unpruned", "ratio": ratio, "D": d, "setting": setting,
                    **{f"{k}": v for k, v in q.items() if k != "time_ci"},
                    **{f"float_{k}": v for k, v in f.items() if k != "time_ci"}, **compare(q, f)})
    return out


def setting_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per setting: its memory over every variant, its time over the timed ones,
    and what it buys where both are known."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[r["setting"]].append(r)
    lines = []
    for setting, rs in sorted(by.items()):
        text = f"{setting} ({len(rs)} variant(s))"
        w = [r["weights_ratio"] for r in rs if "weights_ratio" in r]
        if w:
            text += f": weights {statistics.median(w):.2f}× float's (median, {min(w):.2f}-{max(w):.2f})"
        timed = [r for r in rs if "time_ratio" in r]
        if not timed:
            lines.append(text + "; not timed")
            continue
        p = [r["peak_ratio"] for r in timed if "peak_ratio" in r]
        if p:
            text += f", peak memory {statistics.median(p):.2f}×"
        counts = {s: sum(r["speed"] == s for r in timed) for s in ("faster", "slower", "unresolved")}
        text += (f"; time {statistics.median(r['time_ratio'] for r in timed):.2f}× float's over {len(timed)} timed "
                 f"(median; {counts['faster']} faster, {counts['slower']} slower, {counts['unresolved']} unresolved)")
        buys: dict[str, int] = defaultdict(int)
        for r in timed:
            buys[r["buys"]] += 1
        text += ": buys " + "; ".join(f"{b} ({n})" for b, n in sorted(buys.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(text)
    return lines


def hybrid_section(rows: Sequence[dict[str, Any]]) -> tuple[Section, list[Table]] | None:
    """The section for a study with quantised variants (None without them)."""
    records = hybrid_records(rows)
    if not records:
        return None
    sec = Section("hybrid", "Hybrid compression: what each quantisation setting buys")
    sec.p("Each quantised variant beside the same variant in float (the same pruning at the same r and D; at r = 0 "
          "the unpruned model). Memory: the weights as held in memory, and the peak (weights + one run of the "
          "runtime workload). Time: paired ratios to the unpruned model; faster or slower only where the two "
          "intervals do not overlap. A setting that saves memory without being faster is said to buy memory only.")
    sec.items(setting_lines(records))
    header = ["pruner", "r", "D", "setting", "bits / weight", "weights (MB)", "float weights (MB)", "peak (MB)",
              "float peak (MB)", "time vs unpruned", "float time", "buys", "cross-entropy", "float cross-entropy"]
    cells = [[r["pruner"], f"{r['ratio']:g}", f"{r['D']:g}", r["setting"], fmt(r.get("bits"), 3),
              fmt(_mb(r.get("weights")), 4), fmt(_mb(r.get("float_weights")), 4),
              fmt(_mb(r.get("peak_memory_bytes")), 4), fmt(_mb(r.get("float_peak_memory_bytes")), 4),
              fmt(r.get("time"), 3), fmt(r.get("float_time"), 3), r["buys"], fmt(r.get("loss"), 4),
              fmt(r.get("float_loss"), 4)] for r in records]
    table = Table("hybrid_settings", "What each setting buys, per variant", header, cells, records,
                  "Weights in memory count what the tensors occupy now (a quantiser holding 4-bit values unpacked "
                  "shows a byte each); bits / weight counts the packed bits with scales and zero points.")
    sec.table(table)
    return sec, [table]


def _mb(v: float | None) -> float | None:
    return None if v is None else v / MB


def figure_hybrid(rows: Sequence[dict[str, Any]]) -> Any:
    """Cross-entropy against the weights held in memory, every variant: colour the pruner,
    marker the setting, one panel per RFT size. A ``Drawing``."""
    from lawlab.report.figures import PALETTE, Drawing, legend_below, marker, new_figure

    name, title = "hybrid_tradeoff", "Hybrid compression: loss against memory"
    found = {k: v for k, v in variants(rows).items() if "loss" in v and v.get("weights")}
    if not any(k[3] for k in found):
        return Drawing(name, title, "", missing="no quantised variant has both its cross-entropy and its weights yet")
    sizes = sorted({k[2] for k in found})
    pruners = sorted({k[0] for k in found})
    settings = ["", *sorted({k[3] for k in found} - {""})]
    fig, axes = new_figure(1, len(sizes))
    for ax, d in zip(axes[0], sizes, strict=True):
        for pi, pruner in enumerate(pruners):
            for si, setting in enumerate(settings):
                pts = sorted((v["weights"] / MB, v["loss"]) for k, v in found.items()
                             if k[0] == pruner and k[2] == d and k[3] == setting)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=PALETTE[pi % len(PALETTE)],
                            marker=marker(si), linestyle=":", markersize=5, linewidth=0.8)
        ax.set_xlabel("weights in memory (MB)")
        ax.set_ylabel("PTB cross-entropy (nats)")
        ax.set_title("no RFT" if d == 0 else f"after RFT, D = {d:g}")
    for pi, pruner in enumerate(pruners):
        axes[0][0].plot([], [], color=PALETTE[pi % len(PALETTE)], linestyle="-", label=pruner or "unpruned")
    for si, setting in enumerate(settings):
        axes[0][0].plot([], [], color="grey", marker=marker(si), linestyle="none", label=setting or "float")
    legend_below(fig, axes[0], ncol=4)
    caption = ("Every variant's PTB cross-entropy against the bytes its weights occupy in memory. Colour: the pruner "
               "(dotted lines join its ratios); marker: the quantisation setting. A setting that moves a point left "
               "without moving it up saves memory at no cost in loss.")
    return Drawing(name, title, caption, fig)

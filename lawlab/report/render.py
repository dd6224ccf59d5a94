"""The study report written out: what a researcher would put in a paper, regenerated from the store.

``write_report(OUTPUT)`` gathers the study (:mod:`lawlab.report.gather`), draws the figures,
builds the sections and tables (:mod:`lawlab.report.tables`), and writes under ``OUTPUT/report/``::

    index.html      one self-contained file: CSS inline, figures as base64 PNG, no scripts
    report.md       the Markdown twin, linking figures/*.png
    figures/        every figure as PNG and SVG
    tables/         every table as CSV (raw numbers, intervals in their own columns)

The document is built once as a list of sections (:mod:`lawlab.report.document`) and rendered
here to both HTML and Markdown, so the two never disagree. Every file is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.files import write_bytes
from lawlab.report.document import (
    Section,
    Table,
    beyond_null_text,
    feasible_text,
    fitted_function,
    fmt,
    formula_html,
    r2_text,
    when,
)
from lawlab.report.figures import Drawing, preferred
from lawlab.report.gather import StudyData, gather
from lawlab.report.tables import build

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.findings.answers import Findings
    from lawlab.registry import Registry

# --------------------------------------------------------------------------- rendering

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#1a1a1a;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}nav a{margin-right:1em}.meta{color:#555}
table{border-collapse:collapse;margin:.6em 0 .3em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef3f8}tr:nth-child(even) td{background:#fafafa}td:first-child{white-space:nowrap}
.scroll{overflow-x:auto}.caption{font-size:.86em;color:#444;margin:.2em 0 1em}
.warn{background:#fff4e5;border-left:4px solid #D55E00;padding:.6em .9em;margin:1em 0}
figure{margin:1.2em 0;page-break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#333}.formula{font-family:"STIX Two Math","Cambria Math",serif;white-space:nowrap}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;font-size:.8em}details{margin:.4em 0}
td.formula{white-space:normal}td.long{word-break:break-all;min-width:12em}.wide table{font-size:.78em}
.scroll{box-shadow:inset -10px 0 8px -8px rgba(0,0,0,.25)}
@media print{nav{display:none}body{max-width:none;margin:0}.scroll{overflow:visible;box-shadow:none}
table{width:100%;table-layout:fixed;font-size:.72em}td,th{overflow-wrap:anywhere}td:first-child{white-space:normal}}
"""


def render_html(study: StudyData, sections: list[Section], pngs: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(study.name)}: compression-law study report</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>{html.escape(study.name)}</h1>",
           f'<p class="meta">Compression-law study report, generated {when(time.time())} from '
           f"{html.escape(str(study.root))} by lawlab.</p>",
           "<nav>" + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections) + "</nav>"]
    for s in sections:
        out.append(f'<h2 id="{s.id}">{html.escape(s.title)}</h2>')
        for kind, value in s.blocks:
            out.append(_html_block(kind, value, pngs))
    out.append("</body></html>")
    return "\n".join(out)


def _html_block(kind: str, value: Any, pngs: dict[str, bytes]) -> str:
    if kind == "p":
        return f"<p>{html.escape(value)}</p>"
    if kind == "warn":
        return f'<div class="warn">{html.escape(value)}</div>'
    if kind == "list":
        return "<ul>" + "".join(f"<li>{formula_html(v)}</li>" for v in value) + "</ul>"
    if kind == "pre":
        summary, text = value
        return f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>"
    if kind == "figure":
        d: Drawing = value
        head = f'<h3 id="fig-{d.name}">{html.escape(d.title)}</h3>'
        if d.figure is None:
            return head + f'<div class="warn">Not drawn: {html.escape(d.missing or "")}</div>'
        data = base64.b64encode(pngs[d.name]).decode()
        return (head + f'<figure><img alt="{html.escape(d.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(d.caption)} Files: figures/{d.name}.png, figures/{d.name}.svg."
                "</figcaption></figure>")
    t: Table = value
    rows = []
    for row in t.cells:
        tds = "".join(f'<td class="formula">{formula_html(c)}</td>' if i in t.formula_columns
                      else f'<td class="long">{html.escape(c)}</td>' if _unbreakable(c)
                      else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row))
        rows.append(f"<tr>{tds}</tr>")
    body = "".join(rows) or f'<tr><td colspan="{len(t.header)}">nothing recorded yet</td></tr>'
    scroll = "scroll wide" if len(t.header) >= 10 else "scroll"  # many columns: smaller type before scrolling
    return (f'<h3 id="table-{t.name}">{html.escape(t.title)}</h3><div class="{scroll}"><table>'
            f"<thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in t.header)}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
            f'<p class="caption">{html.escape(t.caption)} CSV: tables/{t.name}.csv.</p>')


def _unbreakable(cell: str) -> bool:
    """A cell with a word too long to sit in a column (a checksum, a path): it may break anywhere."""
    return any(len(word) > 32 for word in cell.split())


def render_markdown(study: StudyData, sections: list[Section]) -> str:
    out = [f"# {study.name}", "", f"Compression-law study report, generated {when(time.time())} from "
           f"`{study.root}` by lawlab.", ""]
    for s in sections:
        out += section_markdown(s)
    return "\n".join(out)


def section_markdown(section: Section) -> list[str]:
    out = [f"## {section.title}", ""]
    for kind, value in section.blocks:
        out += [*_md_block(kind, value), ""]
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(kind: str, value: Any) -> list[str]:
    if kind == "p":
        return [value]
    if kind == "warn":
        return [f"> **Warning.** {value}"]
    if kind == "list":
        return [f"- {v}" for v in value]
    if kind == "pre":
        summary, text = value
        return [f"<details><summary>{html.escape(summary)}</summary>", "", "```", text, "```", "", "</details>"]
    if kind == "figure":
        d: Drawing = value
        if d.figure is None:
            return [f"### {d.title}", "", f"Not drawn: {d.missing}"]
        return [f"### {d.title}", "", f"![{d.title}](figures/{d.name}.png)", "",
                f"*{d.caption}* ([SVG](figures/{d.name}.svg))"]
    t: Table = value
    lines = [f"### {t.title}", "", "| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.cells]
    if not t.cells:
        lines.append("| nothing recorded yet |" + " |" * (len(t.header) - 1))
    return [*lines, "", f"{t.caption} CSV: [tables/{t.name}.csv](tables/{t.name}.csv)".strip()]



# --------------------------------------------------------------------------- files


def table_csv(table: Table) -> str:
    records = table.records or [dict(zip(table.header, row, strict=True)) for row in table.cells]
    columns = list(dict.fromkeys(k for r in records for k in r)) or table.header
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def save_figures(drawings: list[Drawing], folder: Path) -> dict[str, bytes]:
    """PNG and SVG of every drawn figure; returns the PNG bytes for embedding."""
    pngs = {}
    for d in drawings:
        if d.figure is None:
            continue
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            # tight: the image grows to hold every label and the legend below the panels, none clipped
            d.figure.savefig(buf, format=ext, dpi=150, metadata={"Date": None} if ext == "svg" else None,
                             bbox_inches="tight", pad_inches=0.08)
            write_bytes(folder / f"{d.name}.{ext}", buf.getvalue())
            if ext == "png":
                pngs[d.name] = buf.getvalue()
    return pngs


def write_report(output_dir: str | Path, registry: Registry | None = None, console: Any = None) -> Path:
    """Write OUTPUT/report/ (HTML, Markdown, figures, tables) from the store; returns the HTML path."""
    from matplotlib import rc_context

    from lawlab.report.figures import STYLE, all_figures

    study = gather(output_dir, registry)
    folder = Path(output_dir) / "report"
    with rc_context(STYLE):  # type: ignore[arg-type]  # STYLE holds valid rc keys, typed as a plain dict
        drawings = all_figures(study)
        pngs = save_figures(drawings, folder / "figures")
    sections, tables = build(study, drawings)
    for t in tables:
        write_bytes(folder / "tables" / f"{t.name}.csv", table_csv(t))
    write_bytes(folder / "report.md", render_markdown(study, sections))
    if study.findings is not None:
        write_findings(folder, study.findings)
    path = folder / "index.html"
    write_bytes(path, render_html(study, sections, pngs))
    if console is not None:
        drawn = sum(d.figure is not None for d in drawings)
        console.print(f"report: {drawn} figure(s), {len(tables)} table(s) → {path}")
    return path


def write_findings(folder: Path, findings: Findings) -> None:
    """``findings.json`` beside the report: what `lawlab findings` shows, as data."""
    write_bytes(folder / "findings.json", json.dumps(findings.to_dict(), indent=2))


def refresh_published(folder: str | Path, registry: Registry | None = None, console: Any = None) -> Path:
    """A published study (``results.csv`` and ``analysis.json``, no store) read under today's rules:
    its analysis and ``findings.json`` rewritten, and the findings section of its ``report.md`` (and
    ``tables/findings.csv``) rendered again from them. The other sections show the store's cells,
    provenance and figures, which a published folder does not keep: they stay as the study wrote them,
    and the refreshed section says so. Returns the Markdown report's path."""
    from lawlab import __version__
    from lawlab.analysis import published_analysis
    from lawlab.report.tables import findings_section

    root = Path(folder)
    analysis = published_analysis(root, registry, write=True)
    if analysis.findings is None:  # pragma: no cover - every analysis of law rows answers the questions
        raise ValueError(f"{root}: the analysis has no findings to write")
    write_findings(root, analysis.findings)
    section, table = findings_section(analysis.findings)
    section.blocks.insert(1, ("p", (
        f"Re-read {when(time.time())} by lawlab {__version__} from `results.csv` and `analysis.json`, under "
        "today's rules; the study's store is not published, so the sections after this one are as the study "
        "wrote them.")))
    write_bytes(root / "tables" / f"{table.name}.csv", table_csv(table))
    path = root / "report.md"
    lines = path.read_text().split("\n") if path.is_file() else [f"# {root.name}", ""]
    head = f"## {section.title}"
    if head in lines:  # the old section, up to the next one, replaced
        start = lines.index(head)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:  # placed first, after the title and its line, as write_report places it
        start = end = next((i for i in range(1, len(lines)) if lines[i].startswith("## ")), len(lines))
    write_bytes(path, "\n".join(lines[:start] + section_markdown(section) + lines[end:]))
    if console is not None:
        console.print(f"published study re-read: {len(analysis.findings.answers)} answers → {path}")
    return path


def print_summary(output_dir: str | Path, console: Any) -> None:
    """A terminal summary: the pooled fits, the form ranking, and what is missing."""
    from rich.table import Table as RichTable

    study = gather(output_dir)  # the run's own closing line gives the cell counts
    pooled = [f for f in preferred(study.fits) if f.group.get("by") == "pooled"]
    if pooled:
        t = RichTable(title="main fits (pooled)", title_justify="left")
        for col in ("law", "fitted function", "adj. R²", "centred adj. R²", "R² beyond L0; held-out vs L = L0", "n",
                    "feasible"):
            t.add_column(col)
        for f in pooled:  # the centred fit and the held-out error against "no change" beside the uncentred R²
            t.add_row(f.law, fitted_function(f), r2_text(f), fmt(f.r2_centred_adj), beyond_null_text(f), str(f.n),
                      feasible_text(f))
        console.print(t)
    else:
        if not study.laws:
            why = "the spec has no laws"
        elif not any("pooled" in law.group_by for law in study.laws):
            why = f"the spec's laws are fitted by group only (`lawlab fit {output_dir}` shows them)"
        else:
            why = "no law could be fitted to the stored cells yet"
        console.print(f"no pooled fits: {why}", highlight=False)
    unranked: dict[str, str] = {}  # rank_by -> why it cannot rank, said once for every kind
    for kind, table in study.comparisons.items():
        best = next((r for r in table.rows if not r.fit.skipped), None)
        if best is not None:
            cv = best.cv.get(table.rank_by, {})
            if cv.get("rmse") is None:  # no held-out error: said once, never a bare "–"
                failed = cv.get("failed") or []
                unranked[table.rank_by] = cv.get("reason") or (f"no held-out fold could be fitted ({failed[0]})"
                                                               if failed else "no held-out error")
                continue
            console.print(f"{kind}: best form by {table.rank_by} RMSE is {best.form} ({fmt(cv.get('rmse'), 4)})")
    for rank_by, reason in unranked.items():
        other = "leave-one-ratio-out" if rank_by != "leave-one-ratio-out" else "aic"
        console.print(f"law forms not ranked by {rank_by} RMSE: {reason} "
                      f"(`lawlab compare {output_dir} --kind KIND --rank-by {other}` ranks them otherwise)",
                      highlight=False)

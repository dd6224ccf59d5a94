"""Every law command meets a corpus of bad inputs as a researcher types them: each
gives one line naming the input and what is allowed, exit 2, and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lawlab.cli.main import main
from lawlab.laws.simulate import simulate

HEADER = "model,ratio,D,value,L0"


def good_lines() -> list[str]:
    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14},
                    models={"m1": 0.45, "m2": 0.55, "m3": 0.6}, ratios=(0.1, 0.3, 0.5), sizes=(0, 1000, 4000),
                    noise=0.02, seed=1)
    return [f"{r['model']},{r['ratio']},{r['D']:g},{r['value']:.5f},{r['L0']}" for r in rows]


def with_cell(column: str, text: str) -> str:
    """The good CSV with one cell of its 5th data row (line 6 in an editor) replaced."""
    lines = good_lines()
    cells = lines[4].split(",")
    cells[HEADER.split(",").index(column)] = text
    lines[4] = ",".join(cells)
    return "\n".join([HEADER, *lines]) + "\n"


# name -> (file content, what the one-line message must contain)
BAD_CSVS: dict[str, tuple[str | bytes, list[str]]] = {
    "non-number": (with_cell("value", "abc"), ["line 6", "value = 'abc' is not a number"]),
    "D written 4k": (with_cell("D", "4k"), ["line 6", "D = '4k' is not a number"]),
    "NaN": (with_cell("value", "nan"), ["line 6", "value = nan"]),
    "infinite": (with_cell("L0", "inf"), ["line 6", "L0 = inf"]),
    "negative": (with_cell("value", "-0.3"), ["line 6", "value = -0.3 must be > 0"]),
    "zero L0": (with_cell("L0", "0"), ["line 6", "L0 = 0 must be > 0"]),
    "r = 1.5": (with_cell("ratio", "1.5"), ["line 6", "ratio = 1.5 must be in [0, 1)"]),
    "negative D": (with_cell("D", "-5"), ["line 6", "D = -5 must be >= 0"]),
    "blank value": (with_cell("value", ""), ["line 6", "value is blank"]),
    "header only": (HEADER + "\n", ["no rows to fit", "only a header"]),
    "empty file": ("", ["empty file"]),
    "missing column": ("model,ratio,value\nm,0.1,0.5\n", ["missing column(s) D, L0"]),
    "not text": (b"\xff\xfe\x00\x01binary", ["not a UTF-8 text file"]),
}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line means one line, not a wrapped one


@pytest.mark.parametrize("name", BAD_CSVS)
@pytest.mark.parametrize("command", [["fit", "--kind", "extrinsic"], ["compare", "--kind", "extrinsic"],
                                     ["findings"]])
def test_bad_csv_is_one_line_and_exit_2(tmp_path, capsys, name, command):
    content, needles = BAD_CSVS[name]
    path = tmp_path / "data.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if command[0] == "findings" and name == "header only":
        needles = ["only a header"]
    code, _out, err = run([command[0], str(path), *command[1:]], capsys)
    assert_one_line_usage_error(code, err, str(path), *needles)


@pytest.mark.parametrize("name", [n for n in BAD_CSVS if "line 6" in BAD_CSVS[n][1]])
def test_skip_bad_rows_lists_them_and_fits_the_rest(tmp_path, capsys, name):
    path = tmp_path / "data.csv"
    path.write_text(BAD_CSVS[name][0])
    code, out, err = run(["fit", str(path), "--kind", "extrinsic", "--skip-bad-rows"], capsys)
    assert code == 0, err
    assert "skipped 1 row(s)" in out and "line 6" in out
    fits = json.loads(path.with_suffix(".fits.json").read_text())
    assert fits[0]["n"] == len(good_lines()) - 1 and fits[0]["skipped"] is None


def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeff" + "\r\n".join([HEADER, *good_lines()]) + "\r\n").encode())
    code, _out, err = run(["fit", str(path), "--kind", "extrinsic"], capsys)
    assert code == 0, err
    assert json.loads(path.with_suffix(".fits.json").read_text())[0]["n"] == len(good_lines())


@pytest.fixture
def good_csv(tmp_path) -> Path:
    path = tmp_path / "good.csv"
    path.write_text("\n".join([HEADER, *good_lines()]) + "\n")
    kinds = tmp_path / "kinds.csv"  # a misspelt kind in the kind column
    kinds.write_text("\n".join([HEADER + ",kind", *(f"{line},extrinsc" for line in good_lines())]) + "\n")
    return path


@pytest.mark.parametrize("args, needles", [
    (["fit", "{csv}", "--kind", "extrinsic", "--law", "compresion-law"],
     ["--law 'compresion-law'", "Did you mean 'compression-law'"]),
    (["compare", "{csv}", "--kind", "extrinsic", "--forms", "compresion-law"],
     ["--forms 'compresion-law'", "Did you mean 'compression-law'"]),
    (["fit", "{csv}", "--kind", "extrinsic", "--option", "epsilon"], ["--option 'epsilon'", "KEY=VALUE"]),
    (["fit", "{csv}", "--kind", "extrinsic", "--option", "epsilon=abc"], ["--option", "epsilon"]),
    (["fit", "{csv}"], ["--kind"]),  # published numbers carry no kind
    (["fit", "{dir}/kinds.csv"], ["kind column says 'extrinsc'", "--kind"]),
    (["fit", "{csv}", "--kind", "extrinsic", "--bootstrap", "-5"], ["--bootstrap -5", "greater than or equal to 0"]),
    (["fit", "{csv}", "--kind", "extrinsic", "--option", "epsilon=-3"], ["--option epsilon=-3", "greater than 0"]),
    (["compare", "{csv}", "--kind", "extrinsic", "--option", "epsilon=-3"], ["--option epsilon=-3"]),
    (["fit", "{csv}", "--kind", "extrinsical"], ["--kind", "invalid choice"]),
    (["fit", "{dir}/missing.csv", "--kind", "extrinsic"], ["no such file"]),
    (["fit", "{dir}", "--kind", "extrinsic"], ["not a lawlab study output folder"]),
    (["critical", "--beta", "0.5", "--metric", "loss", "--sigma", "0.8"], ["σ = 0.8", "wrong side for a loss"]),
    (["critical", "--beta", "-1.18", "--sigma", "1.5"], ["σ = 1.5", "wrong side for accuracy"]),
    (["critical", "--beta", "-1.18", "--sigma", "-1"], ["--sigma -1", "> 0"]),
    (["critical", "--beta", "-1.18", "--sigma", "abc"], ["--sigma", "invalid float value"]),
    (["critical", "--beta", "1.18", "--sigma", "0.8"], ["beta = 1.18 breaks the accuracy"]),
    (["critical", "--beta", "-1.18", "--gamma", "-0.14", "--sigma", "0.8", "--r", "1.5"], ["--r 1.5", "[0, 1)"]),
    (["critical", "--fits", "{dir}/nothing.json", "--sigma", "0.8"], ["no fits file"]),
    (["critical", "--fits", "{csv}", "--sigma", "0.8"], ["not a fits file"]),
])
def test_bad_flags_are_one_line_and_exit_2(good_csv, capsys, args, needles):
    args = [a.format(csv=good_csv, dir=good_csv.parent) for a in args]
    code, _out, err = run(args, capsys)
    if "invalid" in " ".join(needles):  # argparse prints its usage line first, then the error
        assert code == 2 and "Traceback" not in err and all(n in err for n in needles)
        return
    assert_one_line_usage_error(code, err, *needles)


def test_rows_no_law_reads_are_not_refused():
    from lawlab.laws.data import row_problems

    law_row = {"model": "m", "method": "slicegpt", "ratio": 0.1, "D": 0.0, "value": 3.2, "L0": 3.0,
               "kind": "intrinsic", "law_input": True}
    assert row_problems(law_row) == []
    assert row_problems({**law_row, "ratio_effective": -0.04}) == []  # SliceGPT at small r adds parameters
    assert row_problems({**law_row, "ratio_effective": float("nan")}) == ["ratio_effective = nan (a finite number is needed)"]
    assert row_problems({**law_row, "kind": "rft", "L0": None}) == []  # an RFT training loss: no law reads it
    assert row_problems({**law_row, "law_input": False, "value": -1.0}) == []
    assert row_problems({**law_row, "method": "", "ratio": 0.0, "L0": None}) == []  # the base row gives L0
    assert row_problems({**law_row, "L0": None}) == ["L0 is blank"]

"""The findings' results: a question's :class:`Answer` made of :class:`Part` s, the
:class:`Findings` of a study, and the paper's claims they are judged against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lawlab.files import jsonable
from lawlab.findings.stats import FEW, LEVEL, N_BOOT

SIGMA = {"extrinsic": 0.8, "intrinsic": 1.5}  # recovery thresholds for r_crit (the paper's worked example: 0.8)
QUESTIONS = ("rq1", "rq2", "rq3", "rq4", "rq5", "laws", "composition")
TITLES = {"rq1": "RQ1, shape", "rq2": "RQ2, speed", "rq3": "RQ3, recovery", "rq4": "RQ4, which model to compress",
          "rq5": "RQ5, calibration", "laws": "Laws", "composition": "Composition of compressions"}
CLAIMS = {
    "rq1": "Intrinsic loss rises about quadratically with r and accuracy falls about linearly; below r = 0.5 "
           "models keep 57% of extrinsic performance without RFT and 84% with it.",
    "rq2": "Runtime falls as a power law in (1+r): 24-35% faster at r = 0.5-0.9 for models up to 7B (up to 60% "
           "for larger ones), and bigger models gain more.",
    "rq3": "RFT recovers intrinsic performance much more (up to 55-63%) than extrinsic (about 14%); beyond "
           "r_crit(σ) no RFT recovers σ of the performance.",
    "rq4": "At a similar parameter budget, compressing a smaller model at a lower ratio beats compressing a "
           "larger one at a higher ratio (by about 8%).",
    "rq5": "Calibration-based pruning is better on intrinsic loss; calibration-free pruning is better on "
           "extrinsic accuracy, especially after RFT.",
    "laws": "Eq. 1, L = L0^α (1+r)^β (1 + 1/(D+ε))^γ, describes the results with feasible signs (loss: β, γ > 0; "
            "accuracy: β, γ < 0), and runtime follows S = C (1+r)^β with β < 0.",
    # answered only for studies with hybrid (quantised) variants: lawlab.findings.composition
    "composition": "Compressions compose multiplicatively (effective-parameter form, Frantar et al. 2025; Panferov "
                   "et al. 2025): what a hybrid variant keeps is the product of what each compression keeps alone.",
}
FEW_CI = f"; over fewer than {FEW}, never narrower than Student's t over their means"
CELL_CI = (f"{LEVEL:.0%} BCa bootstrap over cells ({N_BOOT} resamples; a cell is one variant: model, method, r, D)"
           + FEW_CI)
CLUSTER_CI = (f"{LEVEL:.0%} bootstrap over clusters (a cluster is one pruned model: model, method, r, seed, with its D "
              f"cells), each model's L0 drawn from its recorded standard error ({N_BOOT} resamples)" + FEW_CI)


# --------------------------------------------------------------------------- results


@dataclass
class Part:
    """One sub-claim of an answer, with its own verdict and the numbers behind it."""

    name: str
    verdict: str  # consistent | inconsistent | undetermined
    summary: str  # one line for people: the numbers and what they mean
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why undetermined (or inconsistent)


@dataclass
class Answer:
    key: str
    claim: str
    verdict: str
    evidence: dict[str, Any]
    reason: str
    parts: list[Part] = field(default_factory=list)
    ci: str = ""  # how the intervals were made
    notes: list[str] = field(default_factory=list)  # numbers worth reading that carry no verdict

    @classmethod
    def of(cls, key: str, parts: list[Part], ci: str = "", notes: Sequence[str] = (), **evidence: Any) -> Answer:
        decided = [p for p in parts if p.verdict != "undetermined"]
        against = [p for p in decided if p.verdict == "inconsistent"]
        if not decided:
            verdict = "undetermined"
            reason = "; ".join(f"{p.name}: {p.reason}" for p in parts if p.reason) or "no data"
        elif against:
            verdict = "inconsistent"
            reason = "does not hold: " + ", ".join(p.name for p in against)
            held = [p.name for p in decided if p.verdict == "consistent"]
            reason += ("; holds: " + ", ".join(held)) if held else ""
        else:
            verdict = "consistent"
            open_parts = [p.name for p in parts if p.verdict == "undetermined"]
            reason = ("not decided: " + ", ".join(open_parts)) if open_parts else ""
        ev = {p.name: p.evidence for p in parts} | evidence
        return cls(key, CLAIMS[key], verdict, ev, reason, parts, ci, list(notes))

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        parts = [Part(**p) for p in d.get("parts", [])]
        return cls(d["key"], d["claim"], d["verdict"], d.get("evidence", {}), d.get("reason", ""), parts,
                   d.get("ci", ""), list(d.get("notes", [])))


@dataclass
class Findings:
    """The answers to the paper's questions for one study, by key (``rq1`` … ``rq5``, ``laws``)."""

    source: str
    answers: dict[str, Answer]
    notes: list[str] = field(default_factory=list)
    chance: dict[str, Any] = field(default_factory=dict)  # each task against chance, and what was left out

    def __getitem__(self, key: str) -> Answer:
        return self.answers[key]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "notes": self.notes, "chance": jsonable(self.chance),
                **{k: a.to_dict() for k, a in self.answers.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Findings:
        return cls(d.get("source", ""), {k: Answer.from_dict(d[k]) for k in QUESTIONS if k in d}, d.get("notes", []),
                   d.get("chance", {}))

    def summary(self) -> str:
        lines = [f"Findings for {self.source}", "=" * 78]
        for key, a in self.answers.items():
            lines.append(f"{TITLES[key]}: {a.verdict.upper()}" + (f" ({a.reason})" if a.reason else ""))
            lines.append(f"  paper: {a.claim}")
            for p in a.parts:
                lines.append(f"  - {p.name} [{p.verdict}]: {p.summary}" + (f" ({p.reason})" if p.reason and
                                                                          p.reason not in p.summary else ""))
            lines += [f"  · {n}" for n in a.notes]
            if a.ci:
                lines.append(f"  intervals: {a.ci}")
            lines.append("")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def pct(m: float, lo: float, hi: float) -> str:
    return f"{m:.1%}" + (f" [{lo:.1%}, {hi:.1%}]" if math.isfinite(lo) else "")

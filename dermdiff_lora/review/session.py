"""One reader's review session: the images in order, the answers they may give, and their verdict log.

Answers are checked here (never trusted from the page): QC — accept, or reject with at least one reason
code (``REASONS``) and an optional note; study — real or synthetic, confidence and realism 1–5, and the
reader's diagnosis and tone group from the session's choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.prompts import DEFAULT_VALUE_MAPS
from .items import Item, cells_of
from .storage import VerdictLog

REASONS = {  # code -> label; keys 1-7 on the page, in this order
    "diagnosis": "wrong diagnosis appearance",
    "tone": "wrong skin tone",
    "artefact": "artefact or implausible morphology",
    "marks": "ruler, ink or text",
    "copy": "near copy of a training image",
    "quality": "poor quality",
    "other": "other (note)",
}
MAX_NOTE = 500
SCALE = range(1, 6)


class AnswerError(ValueError):
    """An answer the page should not have sent (answered with 400, naming the field)."""


def _ordered(values: set[str], column: str) -> list[str]:
    known = list(DEFAULT_VALUE_MAPS.get(column, {}).values())
    return [v for v in known if v in values] + sorted(values - set(known))


@dataclass
class Session:
    mode: str
    reader: str
    items: list[Item]
    log: VerdictLog
    diagnoses: list[str] = field(default_factory=list)
    tones: list[str] = field(default_factory=list)

    def __post_init__(self):
        cells = cells_of(self.items)
        if not self.diagnoses:
            self.diagnoses = _ordered({c[0] for c in cells if c}, "benign_malignant")
        if not self.tones:
            self.tones = _ordered({c[-1] for c in cells if len(c) > 1}, "skin_tone")

    @property
    def n(self) -> int:
        return len(self.items)

    def state(self) -> dict:
        """What the page needs to start: counts, where to resume, the choices; per-cell progress in QC."""
        state = {"mode": self.mode, "reader": self.reader, "n": self.n, "answered": len(self.log.answers),
                 "position": self.log.first_unanswered(self.n)}
        if self.mode == "qc":
            state["reasons"] = [{"code": k, "label": v} for k, v in REASONS.items()]
            state["cells"] = [{"cell": " / ".join(c), "n": sum(it.cell == c for it in self.items),
                               "done": sum(self.items[p].cell == c for p in self.log.answers)}
                              for c in cells_of(self.items)]
        else:
            state["diagnoses"], state["tones"] = self.diagnoses, self.tones
        return state

    def item(self, position: int) -> dict:
        """The page's view of one position: QC shows everything known; study only the position and the
        reader's own answer (nothing that tells real from synthetic)."""
        it = self.items[position]
        answer = self.log.answers.get(position)
        view = {"position": position, "answer": _public(answer, self.mode)}
        if self.mode == "qc":
            view.update(cell=" / ".join(it.cell), info=it.info, has_nearest=it.nearest is not None)
        return view

    def check(self, body: object) -> dict:
        if not isinstance(body, dict):
            raise AnswerError("the answer must be a JSON object")
        return _check_qc(body) if self.mode == "qc" else _check_study(body, self.diagnoses, self.tones)

    def answer(self, position: int, body: object) -> dict:
        answer = self.check(body)
        item = self.items[position]
        extra = {"synthetic": item.synthetic, "repeat": item.repeat, "cell": list(item.cell)}
        self.log.answer(position, item.sha256, {**answer, **extra})
        return self.state()


def _public(answer: dict | None, mode: str) -> dict | None:
    if answer is None:
        return None
    keys = ("verdict", "reasons", "note") if mode == "qc" else ("source", "confidence", "realism", "diagnosis", "tone")
    return {k: answer.get(k) for k in keys}


def _check_qc(body: dict) -> dict:
    verdict, reasons, note = body.get("verdict"), body.get("reasons") or [], body.get("note") or ""
    if verdict not in ("accept", "reject"):
        raise AnswerError("verdict must be 'accept' or 'reject'")
    if not isinstance(reasons, list) or any(r not in REASONS for r in reasons) or len(set(reasons)) != len(reasons):
        raise AnswerError(f"reasons must be a list of distinct codes from {', '.join(REASONS)}")
    if verdict == "reject" and not reasons:
        raise AnswerError("a rejection needs at least one reason (keys 1-7)")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise AnswerError(f"note must be text of at most {MAX_NOTE} characters")
    return {"verdict": verdict, "reasons": reasons if verdict == "reject" else [], "note": note}


def _check_study(body: dict, diagnoses: list[str], tones: list[str]) -> dict:
    out = {"source": body.get("source"), "diagnosis": body.get("diagnosis"), "tone": body.get("tone")}
    if out["source"] not in ("real", "synthetic"):
        raise AnswerError("source must be 'real' or 'synthetic'")
    for key in ("confidence", "realism"):
        value = body.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value not in SCALE:
            raise AnswerError(f"{key} must be an integer 1-5")
        out[key] = value
    if out["diagnosis"] not in diagnoses:
        raise AnswerError(f"diagnosis must be one of {', '.join(diagnoses)}")
    if out["tone"] not in tones:
        raise AnswerError(f"tone must be one of {', '.join(tones)}")
    return out

"""Per-sample scores and their means: exact match, token F1, ROUGE-L, BLEU, and label-set F1.

ROUGE-L comes from Google's ``rouge-score`` (the reference implementation) and sentence BLEU from
``sacrebleu`` (exponential smoothing, its default for sentences); exact match and token F1
follow the SQuAD definitions. Label-set F1 compares multisets parsed from the generated text
with a structured label column (e.g. chess ``pieces``) through a named parser.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from vlmtune.errors import VlmtuneError

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(pred: str, ref: str) -> float:
    return float(normalize(pred) == normalize(ref))


def multiset_prf(pred: Counter, ref: Counter) -> tuple[float, float, float]:
    """Precision, recall, F1 of two multisets; two empty sets agree perfectly."""
    if not pred and not ref:
        return 1.0, 1.0, 1.0
    common = sum((pred & ref).values())
    p = common / sum(pred.values()) if pred else 0.0
    r = common / sum(ref.values()) if ref else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def token_f1(pred: str, ref: str) -> float:
    return multiset_prf(Counter(normalize(pred).split()), Counter(normalize(ref).split()))[2]


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(pred: str, ref: str) -> float:
    return _rouge().score(ref, pred)["rougeL"].fmeasure


def bleu(pred: str, ref: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(pred, [ref]).score / 100


# name -> (parse generated text, parse the label column), both into a multiset of labels. The
# evaluation layer knows no task: tasks register their parsers (the chess one: vlmtune.stages).
LabelParser = tuple[Callable[[str], Counter], Callable[[str], Counter]]
LABEL_PARSERS: dict[str, LabelParser] = {}


def register_label_parser(name: str, parse_text: Callable[[str], Counter], parse_label: Callable[[str], Counter]) -> None:
    LABEL_PARSERS[name] = (parse_text, parse_label)


def label_parser(name: str | None) -> LabelParser | None:
    """The registered parser pair for ``data.label_parser`` (None: no structured labels)."""
    if name is None:
        return None
    if name not in LABEL_PARSERS:
        known = ", ".join(sorted(LABEL_PARSERS)) or "none registered"
        raise VlmtuneError(f"data.label_parser={name!r} is unknown; registered parsers: {known} (or leave it unset)")
    return LABEL_PARSERS[name]


def score_sample(pred: str, ref: str, label: str | None = None, parser=None) -> dict[str, float]:
    scores = {"exact": exact_match(pred, ref), "token_f1": token_f1(pred, ref), "rouge_l": rouge_l(pred, ref),
              "bleu": bleu(pred, ref)}
    if parser is not None and label is not None:
        p, r, f = multiset_prf(parser[0](pred), parser[1](label))
        scores.update({"label_precision": p, "label_recall": r, "label_f1": f})
    return scores


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}

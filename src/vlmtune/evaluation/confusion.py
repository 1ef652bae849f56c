"""Per-class counts over label multisets (e.g. chess pieces): what the label-set F1 is made of.

Each picture has a reference multiset and a predicted one (from the label parser). Per class, a
picture adds ``min(ref, pred)`` true positives, the rest of the reference as false negatives and
the rest of the prediction as false positives. For set-valued labels a miss and an extra in the
same picture are often one mistake (a king written where the queen was): ``confusions`` counts,
per missed class, the pictures in which each other class was predicted in excess.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

Label = Hashable  # what a parser yields, e.g. ("white", "king")


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fn: int = 0
    fp: int = 0

    @property
    def support(self) -> int:
        """How often the class is in the references."""
        return self.tp + self.fn

    @property
    def f1(self) -> float | None:
        """None where the class is neither in the references nor predicted: nothing to score."""
        total = 2 * self.tp + self.fn + self.fp
        return 2 * self.tp / total if total else None


@dataclass(frozen=True)
class ClassRow:
    label: Label
    after: Counts
    before: Counts | None
    confused_after: list[tuple[Label, int]]
    confused_before: list[tuple[Label, int]] | None


def class_name(label: Label) -> str:
    """("white", "king") -> "white king"; other labels as they print."""
    return " ".join(map(str, label)) if isinstance(label, tuple) else str(label)


def _pairs(refs: list[Counter], preds: list[Counter]):
    if len(refs) != len(preds):
        raise ValueError(f"{len(refs)} reference label sets but {len(preds)} predicted ones")
    return zip(refs, preds)


def class_counts(refs: list[Counter], preds: list[Counter]) -> dict[Label, Counts]:
    totals: dict[Label, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ref, pred in _pairs(refs, preds):
        for label in ref.keys() | pred.keys():
            hit = min(ref[label], pred[label])
            t = totals[label]
            t[0] += hit
            t[1] += ref[label] - hit
            t[2] += pred[label] - hit
    return {label: Counts(*t) for label, t in totals.items()}


def confusions(refs: list[Counter], preds: list[Counter]) -> dict[Label, Counter]:
    """Missed class -> Counter(extra class -> pictures where it was missed and that one was extra)."""
    found: dict[Label, Counter] = defaultdict(Counter)
    for ref, pred in _pairs(refs, preds):
        missed, extra = ref - pred, pred - ref
        for m in missed:
            found[m].update(extra.keys())
    return dict(found)


def _top(counter: Counter | None, top: int) -> list[tuple[Label, int]]:
    # Ties by name so the report does not change between runs of the same predictions.
    return sorted((counter or Counter()).items(), key=lambda kv: (-kv[1], class_name(kv[0])))[:top]


def class_rows(refs: list[Counter], after: list[Counter], before: list[Counter] | None = None,
               top: int = 3) -> list[ClassRow]:
    """One row per class seen in the references or either prediction, sorted by name."""
    counts_after = class_counts(refs, after)
    counts_before = class_counts(refs, before) if before is not None else None
    conf_after = confusions(refs, after)
    conf_before = confusions(refs, before) if before is not None else None
    labels = set(counts_after) | set(counts_before or {})
    return [
        ClassRow(label, counts_after.get(label, Counts()),
                 None if counts_before is None else counts_before.get(label, Counts()),
                 _top(conf_after.get(label), top), None if conf_before is None else _top(conf_before.get(label), top))
        for label in sorted(labels, key=class_name)
    ]

from collections import Counter

import pytest

from vlmtune.evaluation.confusion import Counts, class_counts, class_name, class_rows, confusions

WK, BK, BQ, BP, WP = ("white", "king"), ("black", "king"), ("black", "queen"), ("black", "pawn"), ("white", "pawn")
# Picture 0: king written where the black queen was; picture 1: one of two black pawns turned white.
REFS = [Counter({WK: 1, BQ: 1}), Counter({BP: 2})]
AFTER = [Counter({WK: 1, BK: 1}), Counter({BP: 1, WP: 1})]
BEFORE = [Counter({WK: 1, BQ: 1}), Counter()]


def test_counts_per_class_add_up_over_pictures():
    assert class_counts(REFS, AFTER) == {
        WK: Counts(1, 0, 0), BQ: Counts(0, 1, 0), BK: Counts(0, 0, 1), BP: Counts(1, 1, 0), WP: Counts(0, 0, 1)}
    assert class_counts(REFS, BEFORE) == {WK: Counts(1, 0, 0), BQ: Counts(1, 0, 0), BP: Counts(0, 2, 0)}


def test_multiplicities_split_into_hits_and_extras():
    assert class_counts([Counter({BP: 3})], [Counter({BP: 5})]) == {BP: Counts(3, 0, 2)}
    assert class_counts([Counter({BP: 4})], [Counter({BP: 1})]) == {BP: Counts(1, 3, 0)}


def test_f1_and_support():
    assert Counts(1, 1, 0).f1 == pytest.approx(2 / 3) and Counts(1, 1, 0).support == 2
    assert Counts(0, 1, 0).f1 == 0.0 and Counts(0, 0, 1).support == 0
    assert Counts().f1 is None  # neither in the references nor predicted


def test_confusions_pair_misses_with_extras_of_the_same_picture():
    refs = REFS + [Counter({BQ: 1})]
    preds = AFTER + [Counter({BK: 1, WK: 1})]
    found = confusions(refs, preds)
    assert found[BQ] == Counter({BK: 2, WK: 1}) and found[BP] == Counter({WP: 1})
    assert WK not in found  # never missed
    assert confusions([Counter({BP: 2})], [Counter()]) == {BP: Counter()}  # a miss with nothing in its place


def test_class_rows_before_and_after_sorted_by_name():
    rows = class_rows(REFS, AFTER, BEFORE)
    assert [class_name(r.label) for r in rows] == ["black king", "black pawn", "black queen", "white king", "white pawn"]
    by = {r.label: r for r in rows}
    assert by[BQ].before == Counts(1, 0, 0) and by[BQ].after == Counts(0, 1, 0)
    assert by[BQ].confused_after == [(BK, 1)] and by[BQ].confused_before == []
    assert by[BK].before == Counts() and by[BK].before.f1 is None  # only the tuned model wrote it
    assert by[BP].confused_before == [] and by[BP].confused_after == [(WP, 1)]
    assert class_rows(REFS, AFTER)[0].before is None and class_rows(REFS, AFTER)[0].confused_before is None


def test_confused_with_keeps_the_most_frequent_ties_by_name():
    refs = [Counter({BQ: 1})] * 3
    preds = [Counter({WP: 1, BK: 1}), Counter({WP: 1, WK: 1}), Counter({WP: 1})]
    row = next(r for r in class_rows(refs, preds, top=2) if r.label == BQ)
    assert row.confused_after == [(WP, 3), (BK, 1)]  # white king (1) loses the tie to black king


def test_plain_labels_and_length_mismatch():
    assert class_name("cat") == "cat" and class_name(("white", "king")) == "white king"
    with pytest.raises(ValueError, match="2 reference label sets but 1 predicted"):
        class_counts(REFS, AFTER[:1])

from collections import Counter

import pytest

from vlmtune.evaluation.metrics import exact_match, mean_scores, multiset_prf, normalize, score_sample, token_f1


def test_normalize_and_exact_match():
    assert normalize("A White  Rook.") == "a white rook"
    assert exact_match("A white rook.", "a white rook") == 1.0
    assert exact_match("a white rook", "a black rook") == 0.0


def test_token_f1_by_hand():
    # pred {a, white, rook}, ref {a, black, rook}: 2 common of 3 and 3 -> P = R = F1 = 2/3
    assert token_f1("a white rook", "a black rook") == pytest.approx(2 / 3)
    assert token_f1("", "a rook") == 0.0


def test_multiset_prf_counts_duplicates():
    pred = Counter({("white", "pawn"): 2, ("black", "king"): 1})
    ref = Counter({("white", "pawn"): 1, ("black", "king"): 1})
    p, r, f = multiset_prf(pred, ref)  # 2 common of 3 predicted, of 2 true
    assert (p, r) == (pytest.approx(2 / 3), 1.0) and f == pytest.approx(0.8)
    assert multiset_prf(Counter(), Counter()) == (1.0, 1.0, 1.0)
    assert multiset_prf(Counter(), ref) == (0.0, 0.0, 0.0)


def test_score_sample_with_chess_labels():
    import vlmtune.stages  # noqa: F401  (registers the built-in chess parser)
    from vlmtune.evaluation.metrics import label_parser

    scores = score_sample("a white rook and a black pawn", "a white rook and a black knight",
                          "black knight;white rook", label_parser("chess"))
    assert scores["label_precision"] == 0.5 and scores["label_recall"] == 0.5 and scores["label_f1"] == 0.5
    assert scores["exact"] == 0.0 and scores["rouge_l"] == pytest.approx(6 / 7)  # LCS 6 of 7 tokens
    assert 0 < scores["bleu"] < 1
    perfect = score_sample("a white rook", "a white rook")
    assert perfect["bleu"] == pytest.approx(1.0) and perfect["token_f1"] == 1.0 and "label_f1" not in perfect


def test_mean_scores():
    assert mean_scores([{"x": 1.0}, {"x": 0.0}]) == {"x": 0.5}


def test_unknown_label_parser_stops_train_before_any_work(tmp_path):
    from vlmtune.config import load_config
    from vlmtune.errors import VlmtuneError
    from vlmtune.stages.train import train_run

    cfg = load_config(overrides=[f"output_dir={tmp_path / 'run'}", "data.label_parser=xml", "data.path=nowhere"])
    with pytest.raises(VlmtuneError, match=r"data.label_parser='xml' is unknown; registered parsers: chess"):
        train_run(cfg)
    assert not (tmp_path / "run").exists()


def test_registered_parser_is_used_for_label_scores():
    from collections import Counter

    from vlmtune.evaluation.metrics import label_parser, register_label_parser, score_sample

    register_label_parser("colours", lambda text: Counter(w for w in text.split() if w in {"red", "blue"}),
                          lambda label: Counter(label.split(";")))
    scores = score_sample("a red and a blue box", "x", "red;red", label_parser("colours"))
    assert (scores["label_precision"], scores["label_recall"]) == (0.5, 0.5)

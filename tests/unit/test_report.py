from collections import Counter

from PIL import Image

from vlmtune.evaluation.report import loss_svg, order_by_change, size_caveat, summary_rows, write_report


def test_summary_rows_show_signed_change_and_missing_before():
    rows = {r["key"]: r for r in summary_rows({"label_f1": 0.25, "exact": 0.5}, {"label_f1": 0.75, "exact": 0.25})}
    assert (rows["label_f1"]["before"], rows["label_f1"]["after"], rows["label_f1"]["delta"]) == ("0.250", "0.750", "+0.500")
    assert rows["exact"]["delta"] == "-0.250" and rows["exact"]["cls"] == "down"
    assert summary_rows(None, {"exact": 1.0})[0]["before"] == "—"


def test_loss_curve_draws_only_the_series_it_has():
    train_only = loss_svg([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    assert train_only.count("<polyline") == 1 and "eval loss" not in train_only
    both = loss_svg([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "eval_loss": 1.5}, {"step": 2, "eval_loss": 1.2}])
    assert both.count("<polyline") == 2 and "eval loss" in both
    assert loss_svg([{"step": 1, "loss": 2.0}]) == ""  # one point is no curve


def test_report_escapes_user_text_and_embeds_thumbnails(tmp_path):
    sample = {"image": Image.new("RGB", (300, 200), (1, 2, 3)), "reference": "a <b>rook</b> | pipe",
              "base": "x", "tuned": "a rook", "base_scores": {"token_f1": 0.0}, "tuned_scores": {"token_f1": 0.5}}
    write_report(tmp_path, "t", "s", [sample], {"token_f1": 0.0}, {"token_f1": 0.5}, [], [("rows", "1")])
    html = (tmp_path / "report.html").read_text()
    assert "&lt;b&gt;rook&lt;/b&gt;" in html and "<b>rook</b>" not in html
    assert html.count("data:image/jpeg;base64,") == 1
    md = (tmp_path / "report.md").read_text()
    assert "a &lt;b&gt;rook&lt;/b&gt; \\| pipe" in md and "(thumbs/0000.jpg)" in md
    assert Image.open(tmp_path / "thumbs/0000.jpg").size == (128, 85)  # thumbnail keeps the aspect ratio


def test_pictures_sort_wins_first_then_losses_then_unchanged():
    assert order_by_change([0.0, -0.5, 0.25, None, 0.5, -0.1, 1e-12]) == [4, 2, 1, 5, 0, 3, 6]


def test_size_caveat_says_what_one_picture_is_worth():
    assert size_caveat(48).startswith("48 test pictures: a difference of one picture moves exact match by 0.021")
    assert size_caveat(1).startswith("1 test picture: ") and "by 1.000" in size_caveat(1)


def _labelled(ref, base, tuned, f1_base, f1_tuned):
    scores = lambda f: {"token_f1": 0.5, "label_f1": f}  # noqa: E731
    return {"image": Image.new("RGB", (32, 32)), "reference": "r", "base": "b", "tuned": "t",
            "base_scores": scores(f1_base), "tuned_scores": scores(f1_tuned),
            "reference_labels": Counter(ref), "base_labels": Counter(base), "tuned_labels": Counter(tuned)}


def test_report_explains_per_class_sorts_by_label_f1_and_lists_caveats(tmp_path):
    wk, bq, bk = ("white", "king"), ("black", "queen"), ("black", "king")
    samples = [
        _labelled([wk], [wk], [wk], 1.0, 1.0),  # unchanged
        _labelled([wk, bq], [wk, bq], [wk, bk], 1.0, 0.5),  # loss: king written for the queen
        _labelled([bk], [], [bk], 0.0, 1.0),  # win
    ]
    write_report(tmp_path, "t", "s", samples, {"label_f1": 2 / 3}, {"label_f1": 5 / 6}, [], [],
                 caveats=["test picture #1 looks like train a.png"])
    md = (tmp_path / "report.md").read_text()
    # black king: before 0 hits, 1 miss; after 1 hit (#2) and 1 extra (#1) -> F1 2/3
    assert "| black king | 1 | 0 / 1 / 0 | 1 / 0 / 1 | 0.00 | 0.67 | +0.67 |  |  |" in md
    assert "| black queen | 1 | 1 / 0 / 0 | 0 / 1 / 0 | 1.00 | 0.00 | -1.00 |  | black king (1) |" in md
    assert "| white king | 2 | 2 / 0 / 0 | 2 / 0 / 0 | 1.00 | 1.00 | +0.00 |  |  |" in md
    assert [md.index(f"thumbs/000{i}.jpg") for i in (2, 1, 0)] == sorted(md.index(f"thumbs/000{i}.jpg") for i in range(3))
    assert "| +1.00 |" in md and "| -0.50 |" in md and "by change in label-set F1" in md
    assert "- 3 test pictures: a difference of one picture moves exact match by 0.333" in md
    assert "- test picture #1 looks like train a.png" in md
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Per class</h2>" in page and "<td>black king (1)</td>" in page and "<h2>Caveats</h2>" in page
    assert page.index("#2</span>") < page.index("#1</span>") < page.index("#0</span>")


def test_no_per_class_table_without_labels_and_test_order_without_a_base(tmp_path):
    sample = {"image": Image.new("RGB", (32, 32)), "reference": "r", "tuned": "t", "tuned_scores": {"token_f1": 0.5}}
    write_report(tmp_path, "t", "s", [sample, dict(sample)], None, {"token_f1": 0.5}, [], [])
    md = (tmp_path / "report.md").read_text()
    assert "## Per class" not in md and "Sorted in test order." in md and "## Caveats" in md
    assert "<h2>Per class</h2>" not in (tmp_path / "report.html").read_text()

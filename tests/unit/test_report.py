from PIL import Image

from vlmtune.evaluation.report import loss_svg, summary_rows, write_report


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

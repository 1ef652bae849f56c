"""The before/after report: Markdown (thumbnails as files), self-contained HTML, and a console table."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from vlmtune.data.images import model_rgb

METRIC_NAMES = {
    "label_f1": "label-set F1", "exact": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L", "bleu": "BLEU",
    "label_precision": "label precision", "label_recall": "label recall",
}
TEMPLATES = Path(__file__).parent / "templates"


def summary_rows(before: dict | None, after: dict) -> list[dict]:
    rows = []
    for key in sorted(after, key=lambda k: list(METRIC_NAMES).index(k) if k in METRIC_NAMES else 99):
        b = before.get(key) if before else None
        delta = after[key] - b if b is not None else None
        rows.append({
            "metric": METRIC_NAMES.get(key, key), "key": key,
            "before": f"{b:.3f}" if b is not None else "—", "after": f"{after[key]:.3f}",
            "delta": f"{delta:+.3f}" if delta is not None else "—",
            "cls": "" if not delta else ("up" if delta > 0 else "down"),
        })
    return rows


def thumbnail_jpeg(image, side: int = 128) -> bytes:
    img = model_rgb(image)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def loss_svg(log_history: list[dict], width: int = 560, height: int = 220) -> str:
    """Training (and eval) loss against step as an inline SVG polyline: no plotting dependency."""
    series = {k: [(h["step"], h[k]) for h in log_history if k in h and "step" in h] for k in ("loss", "eval_loss")}
    points = [p for s in series.values() for p in s]
    if len(points) < 2:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) or 1
    y0, y1 = 0.0, max(p[1] for p in points) * 1.05
    pad = 40

    def xy(step, value):
        x = pad + (step - x0) / max(x1 - x0, 1) * (width - 2 * pad)
        return f"{x:.1f},{height - pad - (value - y0) / (y1 - y0) * (height - 2 * pad):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="loss curve">',
             f'<rect width="{width}" height="{height}" fill="white" stroke="#ccc"/>']
    for key, colour in (("loss", "#1f77b4"), ("eval_loss", "#d62728")):
        if series[key]:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(xy(*p) for p in series[key])}"/>')
    parts += [f'<text x="{pad}" y="{height - 12}" font-size="12">step {x0}</text>',
              f'<text x="{width - pad - 60}" y="{height - 12}" font-size="12">step {x1}</text>',
              f'<text x="4" y="{pad - 8}" font-size="12">{y1:.2f}</text>',
              f'<text x="{width - 170}" y="18" font-size="12"><tspan fill="#1f77b4">train loss</tspan>'
              + (' <tspan fill="#d62728">eval loss</tspan>' if series["eval_loss"] else "") + "</text>",
              "</svg>"]
    return "".join(parts)


def _fmt_scores(scores: dict | None) -> str:
    if not scores:
        return ""
    keys = [k for k in ("label_f1", "token_f1", "rouge_l") if k in scores]
    return ", ".join(f"{METRIC_NAMES[k]} {scores[k]:.2f}" for k in keys)


def write_report(out: Path, title: str, subtitle: str, samples: list[dict], before: dict | None, after: dict,
                 log_history: list[dict], facts: list[tuple[str, str]]) -> None:
    """``samples``: dicts with image (PIL), reference, base, tuned, base_scores, tuned_scores."""
    out = Path(out)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(before, after)
    view = []
    for i, s in enumerate(samples):
        jpeg = thumbnail_jpeg(s["image"])
        (thumbs / f"{i:04d}.jpg").write_bytes(jpeg)
        view.append({
            "index": i, "thumb": base64.b64encode(jpeg).decode(), "reference": s["reference"],
            "base": s.get("base", "—"), "tuned": s["tuned"],
            "base_scores": _fmt_scores(s.get("base_scores")), "tuned_scores": _fmt_scores(s["tuned_scores"]),
        })
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, n=len(samples), summary=rows, samples=view, facts=facts,
        loss_svg=loss_svg(log_history),
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "report.md").write_text(_markdown(title, subtitle, rows, view, facts), encoding="utf-8")


def _cell(text: str) -> str:
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def _markdown(title: str, subtitle: str, rows: list[dict], view: list[dict], facts) -> str:
    lines = [f"# {title}", "", subtitle, "", f"## Summary ({len(view)} test pictures)", "",
             "| metric | before | after | change |", "|---|---:|---:|---:|"]
    lines += [f"| {r['metric']} | {r['before']} | {r['after']} | {r['delta']} |" for r in rows]
    lines += [""] + [f"- {k}: {v}" for k, v in facts] + ["", "## Per picture", "",
                                                          "| picture | reference | before | after |", "|---|---|---|---|"]
    for s in view:
        lines.append(f"| ![#{s['index']}](thumbs/{s['index']:04d}.jpg) | {_cell(s['reference'])} | "
                     f"{_cell(s['base'])}<br>{s['base_scores']} | {_cell(s['tuned'])}<br>{s['tuned_scores']} |")
    return "\n".join(lines) + "\n"


def print_summary(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "before", "after", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        table.add_row(r["metric"], r["before"], r["after"], r["delta"])
    Console().print(table)

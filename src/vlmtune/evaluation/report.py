"""The before/after report: Markdown (thumbnails as files), self-contained HTML, and a console table."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from vlmtune.data.images import model_rgb
from vlmtune.evaluation.confusion import ClassRow, Counts, class_name, class_rows

METRIC_NAMES = {
    "label_f1": "label-set F1", "exact": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L", "bleu": "BLEU",
    "label_precision": "label precision", "label_recall": "label recall",
}
TEMPLATES = Path(__file__).parent / "templates"
ROBUSTNESS_KEYS = ("label_f1", "exact", "token_f1")  # the prompt-robustness table's rows, where scored
SAME = 1e-9  # per-picture changes smaller than this are float noise, not a change


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


def trend(delta: float | None) -> str:
    """The CSS class of a change: "up", "down", or "" for none (unknown, or float noise)."""
    return "" if delta is None or abs(delta) < SAME else ("up" if delta > 0 else "down")


def _score(scores: dict | None, key: str) -> str:
    return f"{scores[key]:.3f}" if scores and key in scores else "—"


def side_by_side(before: dict | None, after: dict, other: dict) -> list[dict]:
    """Rows of each metric on the test split and on ``other`` (a probe's before/after scores);
    ``gap`` is the probe's after minus the test split's after (below zero: it carries over less)."""
    rows, o_before, o_after = [], other.get("before"), other["after"]
    for key in (k for k in ROBUSTNESS_KEYS if k in after):
        gap = o_after[key] - after[key] if key in o_after else None
        rows.append({"metric": METRIC_NAMES[key], "before": _score(before, key), "after": _score(after, key),
                     "other_before": _score(o_before, key), "other_after": _score(o_after, key),
                     "gap": "—" if gap is None else f"{gap:+.3f}", "cls": trend(gap)})
    return rows


def robustness_view(before: dict | None, after: dict, heldout: dict | None) -> dict | None:
    """The prompt-robustness table: each metric under the training prompt and the held-out one, before and after."""
    if not heldout:
        return None
    trained = "; ".join(repr(p) for p in heldout.get("training_prompts") or [])
    return {"title": "Prompt robustness", "left": "training prompt", "right": "held-out prompt",
            "rows": side_by_side(before, after, heldout),
            "note": f"The same test pictures, each asked {heldout['prompt']!r} in place of its own prompt: a wording "
                    f"no train row was asked{f' (train rows were asked {trained})' if trained else ''}. "
                    "Gap: held-out after minus training prompt after; below zero, the tuned model leans on the "
                    "wordings it was trained on."}


def domain_view(before: dict | None, after: dict, domain: dict | None) -> dict | None:
    """The held-out-domain table: each metric on the test split and on pictures of a domain not trained on."""
    if not domain:
        return None
    return {"title": "Held-out domain", "left": "test split", "right": "held-out domain",
            "rows": side_by_side(before, after, domain),
            "note": f"{domain['rows']} pictures from {domain['path']}, a domain no train picture comes from "
                    "(data.heldout_domain). Gap: held-out domain after minus test split after; well below zero, "
                    "the tuning learned the training pictures' look more than their subject."}


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


def primary_key(samples: list[dict]) -> str:
    """The per-picture score the report sorts by: label-set F1 where labels exist, else token F1."""
    return "label_f1" if samples and all("label_f1" in s["tuned_scores"] for s in samples) else "token_f1"


def picture_change(sample: dict, key: str) -> float | None:
    base = sample.get("base_scores")
    if not base or key not in base or key not in sample["tuned_scores"]:
        return None
    return sample["tuned_scores"][key] - base[key]


def order_by_change(changes: list[float | None]) -> list[int]:
    """Indices: biggest wins first, then biggest losses, unchanged (or unknown) last; ties by index."""
    def rank(i: int):
        c = changes[i]
        if c is None or abs(c) < SAME:
            return (2, 0.0, i)
        return (0, -c, i) if c > 0 else (1, c, i)

    return sorted(range(len(changes)), key=rank)


def size_caveat(n: int) -> str:
    if n == 0:
        return "no test pictures: the numbers above mean nothing"
    return (f"{n} test picture{'s' if n != 1 else ''}: a difference of one picture moves exact match by {1 / n:.3f} "
            "(and any per-picture mean, such as label-set F1, by up to that much)")


def _f1(counts: Counts | None) -> str:
    return "—" if counts is None or counts.f1 is None else f"{counts.f1:.2f}"


def _confused(pairs: list | None) -> str:
    return "—" if pairs is None else (", ".join(f"{class_name(label)} ({n})" for label, n in pairs) or "")


def confusion_view(rows: list[ClassRow]) -> list[dict]:
    view = []
    for r in rows:
        b, a = r.before, r.after
        delta = a.f1 - b.f1 if b is not None and a.f1 is not None and b.f1 is not None else None
        view.append({
            "name": class_name(r.label), "support": a.support,
            "before": "—" if b is None else f"{b.tp} / {b.fn} / {b.fp}", "after": f"{a.tp} / {a.fn} / {a.fp}",
            "f1_before": _f1(b), "f1_after": _f1(a), "delta": "—" if delta is None else f"{delta:+.2f}",
            "cls": trend(delta),
            "confused_before": _confused(r.confused_before), "confused_after": _confused(r.confused_after),
        })
    return view


def _class_table(samples: list[dict]) -> list[dict]:
    """Per-class rows when every sample has parsed reference labels and some are non-empty."""
    if not samples or not all("reference_labels" in s for s in samples):
        return []
    refs = [s["reference_labels"] for s in samples]
    if not any(refs):
        return []
    before = [s["base_labels"] for s in samples] if all("base_labels" in s for s in samples) else None
    return confusion_view(class_rows(refs, [s["tuned_labels"] for s in samples], before))


def write_report(out: Path, title: str, subtitle: str, samples: list[dict], before: dict | None, after: dict,
                 log_history: list[dict], facts: list[tuple[str, str]], caveats: list[str] = (),
                 heldout: dict | None = None, domain: dict | None = None) -> None:
    """``samples``: dicts with image (PIL), reference, base, tuned, base_scores, tuned_scores, and
    optionally reference_labels / base_labels / tuned_labels (parsed label multisets) for the
    per-class table. ``caveats``: extra lines after the test-size one (e.g. train/test lookalikes).
    ``heldout``: prompt, training_prompts and before/after scores under a held-out prompt, for
    the prompt-robustness table; ``domain``: path, rows and before/after scores on a held-out
    domain (None: no such section)."""
    out = Path(out)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(before, after)
    key = primary_key(samples)
    changes = [picture_change(s, key) for s in samples]
    view = []
    for i, s in enumerate(samples):
        jpeg = thumbnail_jpeg(s["image"])
        (thumbs / f"{i:04d}.jpg").write_bytes(jpeg)
        c = changes[i]
        view.append({
            "index": i, "thumb": base64.b64encode(jpeg).decode(), "reference": s["reference"],
            "base": s.get("base", "—"), "tuned": s["tuned"],
            "base_scores": _fmt_scores(s.get("base_scores")), "tuned_scores": _fmt_scores(s["tuned_scores"]),
            "change": "—" if c is None else ("0.00" if abs(c) < SAME else f"{c:+.2f}"),
            "cls": trend(c),
        })
    view = [view[i] for i in order_by_change(changes)]
    ctx = {"title": title, "subtitle": subtitle, "n": len(samples), "summary": rows, "samples": view, "facts": facts,
           "classes": _class_table(samples), "caveats": [size_caveat(len(samples)), *caveats],
           "comparisons": [v for v in (robustness_view(before, after, heldout), domain_view(before, after, domain)) if v],
           "order": f"by change in {METRIC_NAMES[key]}: biggest wins first, then losses, unchanged last"
                    if any(c is not None for c in changes) else "in test order"}
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(**ctx, loss_svg=loss_svg(log_history))
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "report.md").write_text(_markdown(ctx), encoding="utf-8")


def _cell(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _markdown(ctx: dict) -> str:
    view = ctx["samples"]
    lines = [f"# {ctx['title']}", "", ctx["subtitle"], "", f"## Summary ({len(view)} test pictures)", "",
             "| metric | before | after | change |", "|---|---:|---:|---:|"]
    lines += [f"| {r['metric']} | {r['before']} | {r['after']} | {r['delta']} |" for r in ctx["summary"]]
    lines += [""] + [f"- {k}: {v}" for k, v in ctx["facts"]]
    for comparison in ctx["comparisons"]:
        lines += _comparison_markdown(comparison)
    lines += ["", "## Caveats", ""] + [f"- {_cell(c)}" for c in ctx["caveats"]]
    if ctx["classes"]:
        lines += ["", "## Per class", "", "Counts are true positives / false negatives / false positives. "
                  "*Confused with*: where the class was missed, what was predicted in excess in the same picture "
                  "(number of pictures).", "",
                  "| class | in references | before | after | F1 before | F1 after | change "
                  "| confused with (before) | confused with (after) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        lines += [f"| {_cell(c['name'])} | {c['support']} | {c['before']} | {c['after']} | {c['f1_before']} | "
                  f"{c['f1_after']} | {c['delta']} | {_cell(c['confused_before'])} | {_cell(c['confused_after'])} |"
                  for c in ctx["classes"]]
    lines += ["", "## Per picture", "", f"Sorted {ctx['order']}.", "",
              "| picture | reference | before | after | change |", "|---|---|---|---|---:|"]
    for s in view:
        lines.append(f"| ![#{s['index']}](thumbs/{s['index']:04d}.jpg) | {_cell(s['reference'])} | "
                     f"{_cell(s['base'])}<br>{s['base_scores']} | {_cell(s['tuned'])}<br>{s['tuned_scores']} | {s['change']} |")
    return "\n".join(lines) + "\n"


def _comparison_markdown(view: dict) -> list[str]:
    left, right = view["left"], view["right"]
    lines = ["", f"## {view['title']}", "", _cell(view["note"]), "",
             f"| metric | {left}, before | {left}, after | {right}, before | {right}, after | gap (after) |",
             "|---|---:|---:|---:|---:|---:|"]
    return lines + [f"| {r['metric']} | {r['before']} | {r['after']} | {r['other_before']} | {r['other_after']} "
                    f"| {r['gap']} |" for r in view["rows"]]


def print_summary(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "before", "after", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        table.add_row(r["metric"], r["before"], r["after"], r["delta"])
    Console().print(table)

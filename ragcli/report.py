"""An HTML page of bench runs: one self-contained file that opens offline.

`build_html(runs)` takes bench reports (the JSON `ragcli bench --json` writes), oldest first, and
draws with plotly (the `report` extra), its JavaScript embedded once in the page, so nothing is
fetched when the page is viewed. The page shows, for the newest run: its fingerprint, quality per
retrieval mode, latency percentiles, the speed ratios against their targets (docs/performance.md
§9.1), the questions that flipped against its baseline (or against the run before it), and the
targets side by side when one run measured several (local and Databricks). Over all runs: one trend
line per metric and per fingerprint, with the gate thresholds drawn. Runs whose fingerprints differ
(other models, prompt, splitter, retrieval settings, corpus or QA set) are never joined by one line:
each fingerprint is its own line, and the page lists what tells them apart.
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any

from ragcli.errors import RagcliError

__all__ = ["SPEED_TARGETS", "ReportError", "build_html", "load_runs", "trend_key"]

# The proposed targets of docs/performance.md §9.1 (lower is better for all of them).
SPEED_TARGETS = {
    "ratio.ingest_over_encode": 2.0,
    "ratio.reingest_over_ingest": 0.02,
    "ratio.retrieval_over_raw": 1.2,
    "ratio.help_over_typer": 1.5,
}
# What a trend line holds constant: the inputs and settings that decide the quality numbers. The ragcli
# version and the libraries may change along a line (that is what a trend shows).
TREND_KEYS = ("embed_model", "embed_revision", "gen_model", "gen_revision", "prompt_template", "splitter",
              "retrieval", "index_type", "corpus_sha256", "qa_sha256", "target", "targets")
QUALITY = ("hit_rate", "recall", "mrr", "ndcg", "evidence_hit")
ANSWER_METRICS = ("exact_match", "token_f1", "contained")


class ReportError(RagcliError):
    """A file given to `ragcli report` is not a bench report."""


def load_runs(paths: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(label, report) for each bench report, ordered by the time it was made (file order for ties)."""
    runs = []
    for n, path in enumerate(paths):
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReportError(f"{path} does not exist. Pass bench reports written by: ragcli bench --json FILE") from None
        except (OSError, ValueError, UnicodeDecodeError):
            raise ReportError(f"{path} is not JSON; pass bench reports written by: ragcli bench --json FILE") from None
        if not isinstance(report, dict):
            raise ReportError(f"{path} is not a ragcli bench report.")
        if report.get("kind") == "grid":
            raise ReportError(f"{path} is a --grid report; `ragcli report` draws single bench runs "
                              "(run bench with the winning settings and --json).")
        if not isinstance(report.get("fingerprint"), dict) or not isinstance(report.get("metrics"), dict):
            raise ReportError(f"{path} is not a ragcli bench report (no fingerprint or metrics).")
        runs.append((n, report.get("created") or "", Path(path).stem, report))
    runs.sort(key=lambda r: (r[1], r[0]))
    return [(label, report) for _, _, label, report in runs]


def trend_key(fingerprint: dict[str, Any]) -> str:
    """A short id of what a run measured; runs with different ids are never drawn on one line."""
    fields = {key: fingerprint.get(key) for key in TREND_KEYS}
    template = fields.get("prompt_template")
    if isinstance(template, dict):
        fields["prompt_template"] = template.get("sha256")
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.3f}"


def _single(report: dict[str, Any]) -> dict[str, Any]:
    """The report to draw per-run figures from (a multi-target report: its first target's)."""
    if "targets" in report:
        return next(iter(report["targets"].values()))
    return report


def _figures(label: str, report: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    figures: list[tuple[str, Any]] = []
    r = _single(report)
    k = r.get("k")
    retrieval = r.get("retrieval", {})
    if retrieval:
        fig = go.Figure()
        for name in QUALITY:
            modes = [m for m in retrieval if name in retrieval[m]]
            if modes:
                values = [retrieval[m][name] for m in modes]
                fig.add_bar(name=f"{name}@{k}", x=modes, y=values, text=[_fmt(v) for v in values],
                            textposition="outside")
        fig.update_layout(barmode="group", yaxis={"range": [0, 1.1], "title": "score"},
                          title=f"Retrieval quality per mode ({label}, {r.get('questions')} questions, k={k})")
        figures.append(("quality", fig))
        fig = go.Figure()
        for p in ("p50", "p95", "p99"):
            modes = [m for m in retrieval if p in retrieval[m].get("latency_ms", {}).get("total", {})]
            values = [retrieval[m]["latency_ms"]["total"][p] for m in modes]
            fig.add_bar(name=p, x=modes, y=values, text=[_fmt(v) for v in values], textposition="outside")
        fig.update_layout(barmode="group", yaxis={"title": "ms"}, title=f"Retrieval latency percentiles ({label})")
        figures.append(("latency", fig))
    answers = r.get("answers")
    if answers:
        fig = go.Figure()
        for side in ("with_context", "without_context"):
            values = [answers[side][m] for m in ANSWER_METRICS]
            fig.add_bar(name=side.replace("_", " "), x=list(ANSWER_METRICS), y=values,
                        text=[_fmt(v) for v in values], textposition="outside")
        fig.update_layout(barmode="group", yaxis={"range": [0, 1.1]},
                          title=f"Answers on {answers.get('scored')} questions ({label})")
        figures.append(("answers", fig))
    metrics = r.get("metrics", {})
    ratios = [(name, metrics[name]) for name in SPEED_TARGETS if name in metrics]
    if ratios:
        fig = go.Figure()
        names = [n.removeprefix("ratio.") for n, _ in ratios]
        fig.add_bar(name="measured", x=names, y=[v for _, v in ratios], text=[_fmt(v) for _, v in ratios],
                    textposition="outside")
        fig.add_scatter(name="target (at most)", x=names, y=[SPEED_TARGETS[n] for n, _ in ratios], mode="markers",
                        marker={"symbol": "line-ew-open", "size": 40, "line": {"width": 3}})
        fig.update_layout(title=f"Speed ratios against their targets, lower is better ({label})",
                          yaxis={"title": "ratio"})
        figures.append(("speed", fig))
    if "targets" in report:
        fig = go.Figure()
        names = [n for n in _single(report)["metrics"] if not n.startswith(("latency.", "ratio.", "count."))]
        for target, tr in report["targets"].items():
            values = [tr["metrics"].get(n) for n in names]
            fig.add_bar(name=target, x=names, y=values, text=[_fmt(v) for v in values], textposition="outside")
        fig.update_layout(barmode="group", yaxis={"range": [0, 1.1]}, title=f"Targets side by side ({label})")
        figures.append(("targets", fig))
    return figures


def _thresholds(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, float]]:
    """metric -> (direction, value) of the newest gate set on it."""
    out: dict[str, tuple[str, float]] = {}
    for _, report in runs:
        gates = report.get("gates") or {}
        for name, value in (gates.get("fail_under") or {}).items():
            out[name] = ("at least", value)
        for name, value in (gates.get("fail_over") or {}).items():
            out[name] = ("at most", value)
    return out


def _trend_metrics(runs: list[tuple[str, dict[str, Any]]], gated: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for _, report in runs:
        for name in report["metrics"]:
            bare = name.split(".", 1)[1] if "targets" in report else name
            keep = (name in gated or bare.split(".")[-1] in ("hit_rate", "mrr", "ndcg")
                    or bare.startswith(("answers.context.", "ratio.")))
            if keep and name not in names and not bare.endswith("cut_rate"):
                names.append(name)
    return names


def _trend_figures(runs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    gated = _thresholds(runs)
    labels = [label for label, _ in runs]
    figures = []
    for name in _trend_metrics(runs, gated):
        fig = go.Figure()
        groups: dict[str, list[tuple[str, float]]] = {}
        for label, report in runs:
            if name in report["metrics"]:
                groups.setdefault(trend_key(report["fingerprint"]), []).append((label, report["metrics"][name]))
        for key, points in groups.items():
            fig.add_scatter(name=f"fingerprint {key}", x=[p[0] for p in points], y=[p[1] for p in points],
                            mode="lines+markers+text", text=[_fmt(p[1]) for p in points], textposition="top center")
        if name in gated:
            direction, value = gated[name]
            fig.add_scatter(name=f"gate: {direction} {_fmt(value)}", x=labels, y=[value] * len(labels), mode="lines",
                            line={"dash": "dash", "color": "red"})
        fig.update_layout(title=f"{name} over runs", xaxis={"type": "category", "categoryorder": "array",
                                                             "categoryarray": labels})
        figures.append((f"trend {name}", fig))
    return figures


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fingerprint_html(fp: dict[str, Any]) -> str:
    rows = []
    for key, value in fp.items():
        if key == "prompt_template" and isinstance(value, dict):
            value = {"sha256": value.get("sha256"), **{k: v for k, v in value.items() if k != "sha256"}}
        rows.append([key, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)])
    return _table(rows, ["field", "value"])


def _flips_html(flips: dict[str, Any], against: str) -> str:
    if "targets" in flips:
        return "".join(f"<h3>{_esc(t)}</h3>" + _flips_html(f, against) for t, f in flips["targets"].items())
    parts = []
    rows = [[mode, f["id"], f["change"], f.get("question") or "", f["was"].get("first_relevant_rank") or "–",
             f["now"].get("first_relevant_rank") or "–", ", ".join(f["was"].get("retrieved", [])),
             ", ".join(f["now"].get("retrieved", []))]
            for mode, fs in flips.get("retrieval", {}).items() for f in fs]
    if rows:
        parts.append(f"<h3>Retrieval: hit &harr; miss against {_esc(against)} ({len(rows)})</h3>" + _table(
            rows, ["mode", "id", "change", "question", "rank was", "rank now", "sources was", "sources now"]))
    answers = [[f["id"], f.get("question") or "", " | ".join(f.get("answers") or []), f["was"].get("text", ""),
                ", ".join(s for s in f["was"].get("sources", []) if s), f["now"].get("text", ""),
                ", ".join(s for s in f["now"].get("sources", []) if s)] for f in flips.get("answers", [])]
    if answers:
        parts.append(f"<h3>Context answers changed against {_esc(against)} ({len(answers)})</h3>" + _table(
            answers, ["id", "question", "reference", "answer was", "sources was", "answer now", "sources now"]))
    return "".join(parts) or f"<p>No question flipped against {_esc(against)}.</p>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;background:#fff}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top;max-width:40em}th{background:#eee}.fig{margin:1em 0}.note{color:#555}"""


def build_html(runs: list[tuple[str, dict[str, Any]]], *, title: str = "ragcli bench report") -> str:
    """The page for `runs` ((label, report), oldest first; the last one is "this run")."""
    from ragcli.bench import flipped_questions

    try:
        from plotly.io import to_html
    except ImportError:
        raise RagcliError("The HTML report needs plotly: pip install 'ragcli[report]'") from None
    if not runs:
        raise ReportError("No bench report to draw.")
    label, latest = runs[-1]
    figures = _figures(label, latest) + (_trend_figures(runs) if len(runs) > 1 else [])
    parts = [f"<h1>{_esc(title)}</h1>",
             f"<p class=note>{len(runs)} run(s); newest: {_esc(label)} ({_esc(latest.get('created') or 'no date')}), "
             f"ragcli {_esc(latest.get('ragcli_version'))}, QA set {_esc(latest.get('qa_file'))}.</p>"]
    gates = latest.get("gates")
    if gates:
        state = "passed" if gates.get("passed") else "FAILED: " + "; ".join(gates.get("failed", []))
        parts.append(f"<p>Gates: {_esc(state)}</p>")
    keys = {}
    for run_label, report in runs:
        keys.setdefault(trend_key(report["fingerprint"]), []).append(run_label)
    if len(keys) > 1:
        parts.append("<p class=note>These runs have different fingerprints, drawn as separate lines (never joined): "
                     + "; ".join(f"fingerprint {_esc(k)}: {_esc(', '.join(v))}" for k, v in keys.items()) + ".</p>")
    first = True
    for name, fig in figures:
        fig.update_layout(template="plotly_white", height=420, margin={"t": 60, "b": 60})
        div = to_html(fig, include_plotlyjs=first, full_html=False, config={"displayModeBar": False,
                                                                            "responsive": True},
                      div_id=f"fig-{len(parts)}")
        first = False
        parts.append(f"<div class=fig data-figure='{_esc(name)}'>{div}</div>")
    # Flipped questions: against the run's own --baseline, else against the run before it with its fingerprint.
    if latest.get("flips") is not None:
        parts.append("<h2>Flipped questions</h2>" + _flips_html(latest["flips"], latest.get("baseline_file") or
                                                                 "the baseline"))
    else:
        mine = trend_key(latest["fingerprint"])
        earlier = [(lb, r) for lb, r in runs[:-1] if trend_key(r["fingerprint"]) == mine]
        if earlier:
            parts.append("<h2>Flipped questions</h2>" + _flips_html(flipped_questions(latest, earlier[-1][1]),
                                                                     earlier[-1][0]))
    parts.append("<h2>Fingerprint of the newest run</h2>" + _fingerprint_html(latest["fingerprint"]))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_html(runs: list[tuple[str, dict[str, Any]]], path: Path, **kwargs: Any) -> Path:
    """Write the page atomically (a partial page never replaces a good one)."""
    import os

    text = build_html(runs, **kwargs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

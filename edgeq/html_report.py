"""`export_report.html`: one self-contained page per export (and one comparing targets).

Charts are drawn with matplotlib (Agg, no pyplot state) and inlined as SVG, so the file needs
nothing else to open: no scripts, no network, no image files beside it.

Per target: the verdict and the number that decided it, the task metric for float / simulator /
artifact, per-output parity, size and latency; per-tensor SQNR against float (worst first,
coloured by bits; activations with errors propagated, weights on their own); value histograms of
the worst tensors with the range their integer grid covers. Several targets: size, task metric
and latency side by side.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

# one colour per bit-width, the same in every chart (and distinctive enough to find in a
# screenshot: the report test counts these pixels)
BITS_COLORS = {0: "#9e9e9e", 4: "#d62728", 8: "#1f77b4", 16: "#2ca02c"}
PASS_COLOR, FAIL_COLOR, UNCHECKED_COLOR = "#1b7f3b", "#b3261e", "#8a6d00"
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{padding:12px 16px;border-radius:8px;color:#fff;font-size:16px;font-weight:600;margin:12px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left} th{background:#f5f5f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#6e6e73;font-size:13px} .chart svg{max-width:100%;height:auto}
code{background:#f5f5f7;padding:1px 4px;border-radius:4px}
"""


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig


def _svg(fig: Any) -> str:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        buf = io.StringIO()
        # no <metadata> (creator, date): the same report twice is the same file
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})  # fmt: skip
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _short(name: str, n: int = 42) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1) :]


def layer_chart(layers: Sequence[Mapping[str, Any]], top: int = 30) -> str:
    """Horizontal bars: SQNR (dB) of the worst `top` quantized tensors, coloured by bits."""
    rows = [r for r in layers if r.get("sqnr_db") is not None and math.isfinite(r["sqnr_db"])
            and not r.get("output")][:top]  # fmt: skip
    if not rows:
        return "<p class='note'>no quantized tensor to chart</p>"
    fig = _figure(9, 0.24 * len(rows) + 1.1)
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]
    colors = [BITS_COLORS.get(int(r.get("bits", 0)), "#9467bd") for r in rows]
    hatches = ["//" if r.get("role") == "weight" else "" for r in rows]
    bars = ax.barh(y, [r["sqnr_db"] for r in rows], color=colors, edgecolor="white")
    for bar, h in zip(bars, hatches, strict=True):
        bar.set_hatch(h)
    ax.set_yticks(
        y, [f"{_short(r['tensor'])} ({r.get('role', '')[:1]}{r.get('bits', '')})" for r in rows]
    )
    ax.set_xlabel("SQNR vs float (dB) — lower is worse")
    ax.axvline(0, color="#444", lw=0.6)
    from matplotlib.patches import Patch

    present = sorted({int(r.get("bits", 0)) for r in rows})
    handles = [
        Patch(color=BITS_COLORS.get(b, "#9467bd"), label=f"{b}-bit" if b else "float")
        for b in present
    ]
    handles.append(
        Patch(facecolor="white", edgecolor="#444", hatch="//", label="weight (own error)")
    )
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def histogram_chart(hists: Sequence[Mapping[str, Any]]) -> str:
    """Small multiples: value histograms with the integer grid's range shaded."""
    if not hists:
        return "<p class='note'>no histogram data</p>"
    cols = min(3, len(hists))
    rows = math.ceil(len(hists) / cols)
    fig = _figure(3.4 * cols, 2.4 * rows)
    for i, h in enumerate(hists):
        ax = fig.add_subplot(rows, cols, i + 1)
        edges, counts = h["edges"], h["counts"]
        color = BITS_COLORS.get(int(h.get("bits", 0)), "#9467bd")
        ax.stairs(counts, edges, fill=True, color=color, alpha=0.85)
        lo, hi = h.get("grid", [None, None])
        if lo is not None and hi is not None:
            ax.axvline(lo, color="#b3261e", lw=1, ls="--")
            ax.axvline(hi, color="#b3261e", lw=1, ls="--")
        ax.set_yscale("symlog")
        clipped = h.get("clipped", 0.0)
        ax.set_title(f"{_short(h['tensor'], 30)}\n{h['role']} {h.get('bits', '')}-bit, "
                     f"{clipped:.2%} outside the grid", fontsize=8)  # fmt: skip
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _svg(fig)


def targets_chart(rows: Sequence[Mapping[str, Any]]) -> str:
    """Size, task metric and latency per target, side by side."""
    names = [r["target"] for r in rows]
    fig = _figure(10.5, 3.0)
    colors = [PASS_COLOR if r["verdict"] == "PASS" else FAIL_COLOR for r in rows]
    ax = fig.add_subplot(1, 3, 1)
    ax.bar(names, [r["size_ratio"] for r in rows], color="#1f77b4")
    ax.set_title("size vs float artifact (x)")
    ax = fig.add_subplot(1, 3, 2)
    metric = next((r["metric"] for r in rows if r.get("metric")), None)
    if metric:
        ax.bar(names, [(r["metric"] or {}).get("quant") or 0.0 for r in rows], color=colors)
        ax.axhline(metric.get("float") or 0.0, color="#444", ls="--", lw=1, label="float")
        ax.legend(fontsize=8)
        better = "lower" if metric.get("kind") == "max_increase" else "higher"
        ax.set_title(
            f"{metric['name']} {metric['unit']} ({better} is better); green PASS, red FAIL"
        )
    else:
        ax.set_title("no task metric")
    ax = fig.add_subplot(1, 3, 3)
    lat = [r.get("speedup") or 0.0 for r in rows]
    ax.bar(names, lat, color="#2ca02c")
    ax.axhline(1.0, color="#444", lw=0.8)
    ax.set_title("speed-up vs float (same runtime)")
    for i, r in enumerate(rows):
        if r.get("speedup") is None:
            ax.text(i, 0.05, "not\nmeasured", ha="center", fontsize=7)
    for a in fig.axes:
        a.tick_params(labelsize=8)
    fig.tight_layout()
    return _svg(fig)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(m: Mapping[str, Any] | None, key: str) -> str:
    if not m or m.get(key) is None:
        return "—"
    v = m[key]
    return f"{v:.2f}%" if m["unit"] == "%" else (f"{v:.1f} dB" if m["unit"] == "dB" else f"{v:.4f}")


def _verdict_block(v: Mapping[str, Any]) -> str:
    status = v.get("status", "UNCHECKED")
    color = {"PASS": PASS_COLOR, "FAIL": FAIL_COLOR}.get(status, UNCHECKED_COLOR)
    src = v.get("budget_source", "")
    return (f"<div class='verdict' style='background:{color}'>{_e(v.get('line', status))}</div>"
            + (f"<p class='note'>budget from the {_e(src)}</p>" if src else ""))  # fmt: skip


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")  # fmt: skip


def export_html(report: Mapping[str, Any]) -> str:
    """The per-target page."""
    a = report["artifact"]
    ev = report.get("evaluation", {})
    model = report.get("model", {}).get("file", "?")
    parts = [f"<h1>edgeq export: {_e(model)} → {_e(report['target'])}</h1>",
             _verdict_block(report.get("verdict", {}))]  # fmt: skip
    if ev.get("note"):
        parts.append(f"<p class='note'>⚠ {_e(ev['note'])}</p>")
    parts.append("<h2>Summary</h2><table>")
    lat = report.get("latency", {})
    lat_text = (f"{lat['quantized']['p50_ms']:.2f} ms vs float {lat['float']['p50_ms']:.2f} ms "
                f"({lat['speedup']:.2f}x, {lat['runs']} interleaved runs on {lat['runtime']})"
                if "quantized" in lat else lat.get("skipped", "not measured"))  # fmt: skip
    summary = [
        ("artifact", f"{a['file']} ({a['format']})"),
        ("plan", report.get("recipe", {}).get("label", "")),
        ("size", f"{a['bytes'] / 1e6:.2f} MB = {a['size_ratio']:.3f}x the float {a['format']} ({a['float_bytes'] / 1e6:.2f} MB)"),
        ("evaluation", f"{ev.get('samples', 0)} samples ({ev.get('source', '')}), "
                       f"{'labels' if ev.get('labels') else 'no labels: compared with float'}"),
        ("latency", lat_text),
        ("plan hash", report.get("plan_hash", "")[:16]),
        ("edgeq", report.get("edgeq_version", "")),
    ]  # fmt: skip
    parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary]
    parts.append("</table>")
    task = report.get("task") or {}
    if task.get("metrics"):
        sim = {(m["name"], m["against"]): m for m in task.get("simulator_metrics", [])}
        parts.append(f"<h2>Task metric ({_e(task['name'])})</h2><table><tr><th>metric</th>"
                     "<th>float</th><th>simulator</th><th>artifact</th></tr>")  # fmt: skip
        for m in task["metrics"]:
            s = sim.get((m["name"], m["against"]))
            parts.append(f"<tr><td>{_e(m['title'])}</td><td class='num'>{_fmt(m, 'float')}</td>"
                         f"<td class='num'>{_fmt(s, 'quant')}</td><td class='num'>{_fmt(m, 'quant')}</td></tr>")  # fmt: skip
        parts.append("</table>")
        examples = (
            (task["metrics"][0].get("detail") or {}).get("examples") if task["metrics"] else None
        )
        if examples:
            parts.append("<table><tr><th>label</th><th>float</th><th>artifact</th></tr>")
            parts += [f"<tr><td>{_e(x.get('label', ''))}</td><td>{_e(x['float'])}</td><td>{_e(x['quant'])}</td></tr>"
                      for x in examples]  # fmt: skip
            parts.append("</table>")
    if report.get("outputs"):
        parts.append("<h2>Outputs: artifact vs simulator and float</h2><table><tr><th>output</th>"
                     "<th>within 1 step of simulator</th><th>SQNR vs float</th><th>cosine vs float</th>"
                     "<th>simulator SQNR</th></tr>")  # fmt: skip
        for name, row in report["outputs"].items():
            vs = row.get("vs_simulator", {})
            parts.append(f"<tr><td>{_e(name)}</td><td class='num'>{vs.get('within_one_step', float('nan')):.2%}</td>"
                         f"<td class='num'>{row['vs_float']['sqnr_db']:.1f} dB</td>"
                         f"<td class='num'>{row['vs_float']['cosine']:.5f}</td>"
                         f"<td class='num'>{row.get('simulator_vs_float', {}).get('sqnr_db', float('nan')):.1f} dB</td></tr>")  # fmt: skip
        parts.append("</table>")
    layers = report.get("layers") or []
    parts.append("<h2>Per-tensor error (worst first)</h2><p class='note'>activations: SQNR of the "
                 "simulated plan against float with errors propagated from earlier layers; weights "
                 "(hatched): each weight's own quantization error</p>")  # fmt: skip
    parts.append(f"<div class='chart' id='layers'>{layer_chart(layers)}</div>")
    parts.append("<h2>Value ranges of the worst tensors</h2><p class='note'>histogram of float "
                 "values (activations: first evaluation sample), dashed: the range the integer "
                 "grid covers; values outside are clipped</p>")  # fmt: skip
    parts.append(
        f"<div class='chart' id='histograms'>{histogram_chart(report.get('histograms') or [])}</div>"
    )
    if a.get("notes"):
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in a["notes"][:50]) + "</ul>"
        )
    return _page(f"edgeq export {model} → {report['target']}", "".join(parts))


def comparison_html(summary: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]]) -> str:
    """The page comparing several targets exported from one calibration."""
    rows = summary["targets"]
    parts = [f"<h1>edgeq export: {_e(summary['model']['file'])} → {_e(', '.join(r['target'] for r in rows))}</h1>",
             _verdict_block({"status": summary["verdict"],
                             "line": f"{summary['verdict']}: "
                                     + "; ".join(f"{r['target']} {r['verdict']}" for r in rows)}),
             f"<p class='note'>one calibration for every target; {summary['seconds']:.0f} s in all</p>",
             "<h2>Targets side by side</h2>",
             f"<div class='chart' id='targets'>{targets_chart(rows)}</div>",
             "<table><tr><th>target</th><th>plan</th><th>size vs float</th><th>task metric (artifact / float)</th>"
             "<th>verdict</th><th>latency</th><th>report</th></tr>"]  # fmt: skip
    for r in rows:
        m = r.get("metric")
        metric = f"{m['name']} {_fmt(m, 'quant')} / {_fmt(m, 'float')}" if m else "—"
        lat = (f"{r['latency_ms']:.2f} vs {r['float_latency_ms']:.2f} ms ({r['runtime']})"
               if r.get("latency_ms") is not None else (r.get("latency_note") or "—"))  # fmt: skip
        color = PASS_COLOR if r["verdict"] == "PASS" else FAIL_COLOR
        parts.append(f"<tr><td>{_e(r['target'])}</td><td>{_e(r['plan'])}</td><td class='num'>{r['size_ratio']:.3f}x</td>"
                     f"<td>{_e(metric)}</td><td style='color:{color};font-weight:600'>{_e(r['verdict'])}</td>"
                     f"<td>{_e(lat)}</td><td><a href='{_e(r['target'])}/export_report.html'>details</a></td></tr>")  # fmt: skip
    parts.append("</table>")
    for t, rep in reports.items():
        parts.append(
            f"<h2>{_e(t)}: worst tensors</h2><p class='note'>{_e(rep['verdict']['line'])}</p>"
        )
        parts.append(f"<div class='chart'>{layer_chart(rep.get('layers') or [], top=12)}</div>")
    return _page(f"edgeq export {summary['model']['file']}", "".join(parts))


__all__ = ["BITS_COLORS", "comparison_html", "export_html", "histogram_chart", "layer_chart",
           "targets_chart"]  # fmt: skip

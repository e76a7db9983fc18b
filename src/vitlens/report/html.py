"""The study report: one self-contained HTML file (figures inlined, no network, no scripts).

Organised by the paper's three questions — what MSAs do to optimization, whether MSAs act like
Convs, and how to combine them — and opened by a table of the paper's claims with the value the
paper reports, the value this study measured and whether it holds here. Everything is read from
the study folder's saved Results and run metrics, so `vitlens report DIR` can redraw it.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path
from typing import Any

from vitlens.analysis.result import Result, load_result
from vitlens.atomic import write_text as atomic_write_text
from vitlens.errors import VitlensError
from vitlens.report.claims import evaluate_claims

SECTIONS = [
    (
        "What do MSAs do to optimization?",
        "MSAs flatten the loss landscape but, on small data, leave it non-convex: look for fewer "
        "large positive Hessian eigenvalues and more negative ones for ViT, flatter landscapes, "
        "and a training NLL that tracks the test error (not overfitting).",
        ["accuracy", "hessian", "landscape", "landscape_1d", "trajectory"],
    ),
    (
        "Do MSAs act like Convs?",
        "No: MSAs are low-pass filters that aggregate feature maps (lower high-frequency amplitude "
        "and variance), Convs are high-pass and diversify them. The lesion, CKA, attention and "
        "robustness figures show where each kind of block matters.",
        [
            "fourier",
            "variance",
            "cka",
            "lesion",
            "attention",
            "freqnoise",
            "corruptions",
            "corruptions_heatmap",
        ],
    ),
    (
        "How do we harmonize MSAs with Convs?",
        "AlterNet puts MSA blocks at the end of each stage of a ResNet. Compare its accuracy and "
        "robustness with the ResNet's, and its lesion profile: the stage-ending MSAs carry weight.",
        ["alternet", "buildup"],
    ),
]

CAPTIONS = {
    "accuracy": "Test accuracy and training NLL (on augmented data: the paper's NLL_train).",
    "hessian": "Hessian max-eigenvalue spectra (top eigenvalues per minibatch of augmented "
    "training data, NLL + L2), models overlaid; NEP and APE in the legend (paper Fig. 1c, 4).",
    "landscape": "2-D loss landscape (NLL + L2) along filter-normalized random directions.",
    "landscape_1d": "1-D slices of the loss landscapes, models overlaid (paper Fig. 1a).",
    "trajectory": "Optimization trajectory in polar form: distance to the final weights against "
    "the angle to the initial displacement (paper Fig. 1b).",
    "fourier": "Relative log amplitude of the feature maps' Fourier transform at 1.0π against "
    "depth, MSA blocks shaded (paper Fig. 2a, 8).",
    "variance": "Feature-map variance against depth, MSA blocks shaded (paper Fig. 9).",
    "cka": "Representational similarity (minibatch linear CKA) between all pairs of blocks.",
    "lesion": "Change in accuracy and NLL when one residual branch is removed (paper §4).",
    "attention": "Mean attention distance and entropy per head and block.",
    "freqnoise": "Change in accuracy under frequency-band noise, models overlaid (paper Fig. 2b).",
    "corruptions": "Accuracy under the 15 common corruptions (mean over 5 severities).",
    "corruptions_heatmap": "Accuracy per corruption and severity.",
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:28px;margin:8px 0 4px}h2{margin-top:40px;border-bottom:2px solid #e4e7ec;
padding-bottom:6px}
.scale{background:#fff7e6;border-left:4px solid #f0a020;padding:10px 14px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:14px;margin:12px 0}
th,td{border-bottom:1px solid #e4e7ec;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}.yes{color:#137333;font-weight:600}.no{color:#b3261e;font-weight:600}
.na{color:#777}figure{margin:20px 0}figure img{max-width:100%;border:1px solid #e4e7ec}
figcaption{font-size:13px;color:#555;margin-top:4px}.num{text-align:right;
font-variant-numeric:tabular-nums}
"""


def load_study_results(folder: Path) -> dict[str, dict[str, Result]]:
    results: dict[str, dict[str, Result]] = {}
    for path in sorted((folder / "results").glob("*/*.json")):
        results.setdefault(path.parent.name, {})[path.stem] = load_result(path)
    return results


def load_run_rows(folder: Path, models: list[str]) -> dict[str, dict[str, Any]]:
    rows = {}
    for model in models:
        path = folder / "runs" / model / "metrics.jsonl"
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if lines:
                total = sum(line.get("train_seconds", 0.0) for line in lines)
                rows[model] = {**lines[-1], "total_train_seconds": total}
    return rows


def draw_study_figures(folder: Path, results: dict[str, dict[str, Result]]) -> dict[str, Path]:
    from vitlens.report.figures import draw

    figures = {}
    for analysis, by_model in results.items():
        if analysis == "buildup":
            continue
        for path in draw(list(by_model.values()), folder / "figures"):
            figures[path.stem] = path
    return figures


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _accuracy_table(rows: dict[str, dict[str, Any]], results) -> str:
    corr = results.get("corruptions", {})
    head = (
        "<tr><th>model</th><th class=num>test acc</th><th class=num>test NLL</th>"
        "<th class=num>ECE</th><th class=num>NLL_train</th><th class=num>corruption acc</th>"
        "<th class=num>epochs</th><th class=num>training s</th></tr>"
    )
    body = []
    for model, r in rows.items():
        c = corr.get(model)
        body.append(
            f"<tr><td>{html.escape(model)}</td><td class=num>{r['test_acc']:.2%}</td>"
            f"<td class=num>{r['test_nll']:.3f}</td><td class=num>{r['test_ece']:.3f}</td>"
            f"<td class=num>{r['train_nll']:.3f}</td>"
            f"<td class=num>{'' if c is None else f'{c.mean_accuracy:.2%}'}</td>"
            f"<td class=num>{r['epoch']}</td>"
            f"<td class=num>{r.get('total_train_seconds', 0):.0f}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _buildup_table(folder: Path) -> str:
    path = folder / "buildup" / "buildup.json"
    if not path.exists():
        return ""
    r = load_result(path)
    rows = "".join(
        f"<tr><td>{html.escape(str(c['msa']))}</td><td class=num>{c['accuracy']:.2%}</td>"
        f"<td>{'kept' if c['kept'] else 'rejected'}</td></tr>"
        for c in r.candidates
    )
    return (
        "<h3>Build-up search</h3><table><tr><th>MSA blocks per stage</th>"
        f"<th class=num>val acc</th><th>decision</th></tr>{rows}</table>"
    )


def write_report(folder: str | Path) -> Path:
    """Draw every figure from the saved Results of a study and write `report.html`."""
    folder = Path(folder)
    try:
        plan = json.loads((folder / "study.json").read_text())
        steps = json.loads((folder / "steps.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise VitlensError(f"{folder} is not a study folder (no study.json/steps.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VitlensError(f"{folder}/study.json or steps.json is corrupt: {err}") from None
    if not isinstance(plan, dict) or not isinstance(steps, dict):
        raise VitlensError(f"{folder}/study.json and steps.json must each hold a JSON mapping")
    models = plan["models"]
    results = load_study_results(folder)
    rows = load_run_rows(folder, models)
    figures = draw_study_figures(folder, results)
    claims = evaluate_claims(results, rows, models)

    def verdict(holds):
        if holds is None:
            return "<span class=na>n/a</span>"
        return "<span class=yes>holds</span>" if holds else "<span class=no>does not hold</span>"

    claim_rows = "".join(
        f"<tr><td>{c.id}</td><td>{html.escape(c.claim)}</td><td>{html.escape(c.paper)}</td>"
        f"<td>{html.escape(c.measured)}</td><td>{verdict(c.holds)}</td></tr>"
        for c in claims
    )
    n_images = "the whole training set" if plan["fraction"] == 1 else f"{plan['fraction']:.0%}"
    wall = sum(s.get("seconds", 0) for s in steps.values())
    scale = (
        f"<div class=scale><b>Scale of this study.</b> {len(models)} models "
        f"({html.escape(', '.join(models))}) trained for {plan['epochs']} epochs on "
        f"{n_images} of <b>{html.escape(plan['dataset'])}</b> with the "
        f"<b>{html.escape(plan['train_preset'])}</b> recipe (study preset "
        f"<b>{html.escape(plan['preset'])}</b>); analyses streamed the batches listed in "
        f"study.json. Total step time {wall / 60:.1f} min. The paper trains on CIFAR-100 for "
        "300 epochs: at this scale only the <i>direction</i> of each claim can be checked, not "
        "its magnitude.</div>"
    )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>vitlens study: {html.escape(plan['dataset'])}</title><style>{STYLE}</style>",
        "</head><body><main>",
        "<h1>How do vision transformers work?</h1>",
        f"<p>A vitlens study of Park &amp; Kim (ICLR 2022), written "
        f"{datetime.date.today().isoformat()}.</p>",
        scale,
        "<h2>The paper's claims, measured here</h2>",
        "<table><tr><th>#</th><th>claim</th><th>paper</th><th>this study</th><th>here</th></tr>",
        claim_rows,
        "</table>",
    ]
    for title, intro, keys in SECTIONS:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(intro)}</p>")
        for key in keys:
            if key == "accuracy" and rows:
                parts.append(
                    f"<figure>{_accuracy_table(rows, results)}<figcaption>"
                    f"{html.escape(CAPTIONS['accuracy'])}</figcaption></figure>"
                )
            elif key == "buildup":
                parts.append(_buildup_table(folder))
            elif key in figures:
                caption = html.escape(CAPTIONS.get(key, key))
                parts.append(
                    f"<figure>{_img(figures[key])}<figcaption>{caption}</figcaption></figure>"
                )
    parts.append("</main></body></html>")
    out = folder / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out

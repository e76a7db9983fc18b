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

from vitlens.analysis.claim import (
    ATTENDING_SHARE,
    CHANCE_FACTOR,
    UNTESTABLE,
    StudyView,
    attention_share,
)
from vitlens.analysis.result import Result, load_result
from vitlens.atomic import write_text as atomic_write_text
from vitlens.folders import StudyFolder
from vitlens.locks import folder_lock
from vitlens.report.claims import evaluate_claims, scale_checks
from vitlens.report.scale import run_facts, scale_box

# The introduction of each of the paper's three questions (`vitlens.analysis.spec.SECTIONS`).
INTROS = {
    "inside": "A ViT cuts the image into patches, embeds them linearly, adds position embeddings "
    "and lets multi-head self-attention mix the tokens. For a few fixed test images: where the "
    "class token attends in each block, the attention rollout through all blocks and the "
    "gradient rollout for the predicted class; what the position embeddings learned and the "
    "embedding filters' principal components; and the tokens' norms by depth. The line below "
    "each model says how far its attention is from uniform: a model that has not learned to "
    "attend shows near-uniform maps.",
    "optimization": "MSAs flatten the loss landscape but, on small data, leave it non-convex: "
    "look for fewer large positive Hessian eigenvalues and more negative ones for ViT, flatter "
    "landscapes, and a training NLL that tracks the test error (not overfitting).",
    "features": "No: MSAs are low-pass filters that aggregate feature maps (lower high-frequency "
    "amplitude and variance), Convs are high-pass and diversify them. The lesion, CKA, attention "
    "and robustness figures show where each kind of block matters.",
    "harmonize": "AlterNet puts MSA blocks at the end of each stage of a ResNet. Compare its "
    "accuracy and robustness with the ResNet's, and its lesion profile: the stage-ending MSAs "
    "carry weight.",
}

ACCURACY_CAPTION = "Test accuracy and training NLL (on augmented data: the paper's NLL_train)."

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


def load_study_results(folder: StudyFolder) -> dict[str, dict[str, Result]]:
    """analysis -> model -> Result, for every Result the study saved."""
    results: dict[str, dict[str, Result]] = {}
    for path in folder.result_files():
        results.setdefault(path.parent.name, {})[path.stem] = load_result(path)
    return results


def load_run_rows(runs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """member key -> the last metrics row of its run folder, with the total training seconds."""
    rows = {}
    for model, run in runs.items():
        path = run / "metrics.jsonl"
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if lines:
                total = sum(line.get("train_seconds", 0.0) for line in lines)
                rows[model] = {**lines[-1], "total_train_seconds": total}
                rows[model]["num_classes"] = _num_classes(run)
    return rows


def _num_classes(run: Path) -> int | None:
    """The classes of a run's model, from its checkpoint record (chance level for the claims)."""
    for name in ("final.json", "last.json"):
        path = run / "checkpoints" / name
        if path.exists():
            try:
                spec = json.loads(path.read_text()).get("model_spec") or {}
            except (OSError, ValueError):
                return None
            classes = spec.get("num_classes") if isinstance(spec, dict) else None
            return classes if isinstance(classes, int) and classes > 0 else None
    return None


def draw_study_figures(
    folder: StudyFolder, results: dict[str, dict[str, Result]]
) -> dict[str, tuple[Path, str]]:
    """figure name -> (PNG, caption), for every figure of every analysis with Results."""
    from vitlens.analysis.registry import analyses
    from vitlens.report.figures import draw

    figures = {}
    for spec in analyses():
        by_model = results.get(spec.name)
        if not by_model:
            continue
        captions = {f.name: f.caption for f in spec.figures}
        for path in draw(list(by_model.values()), folder.figures):
            figures[path.stem] = (path, captions.get(path.stem, path.stem))
    return figures


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _accuracy_table(rows: dict[str, dict[str, Any]], results) -> str:
    """Each model's training outcome, then the columns the analyses declare (`Column`)."""
    from vitlens.analysis.registry import analyses

    extra = [(spec.name, col) for spec in analyses() for col in spec.columns]
    head = (
        "<tr><th>model</th><th class=num>test acc</th><th class=num>test NLL</th>"
        "<th class=num>ECE</th><th class=num>NLL_train</th>"
        + "".join(f"<th class=num>{html.escape(col.header)}</th>" for _, col in extra)
        + "<th class=num>epochs</th><th class=num>training s</th></tr>"
    )
    body = []
    for model, r in rows.items():
        cells = []
        for name, col in extra:
            found = results.get(name, {}).get(model)
            cells.append(f"<td class=num>{'' if found is None else col.value(found)}</td>")
        body.append(
            f"<tr><td>{html.escape(model)}</td><td class=num>{r['test_acc']:.2%}</td>"
            f"<td class=num>{r['test_nll']:.3f}</td><td class=num>{r['test_ece']:.3f}</td>"
            f"<td class=num>{r['train_nll']:.3f}</td>{''.join(cells)}"
            f"<td class=num>{r['epoch']}</td>"
            f"<td class=num>{r.get('total_train_seconds', 0):.0f}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _buildup_table(folder: StudyFolder) -> str:
    path = folder.buildup_result
    if not path.exists():
        return ""
    r = load_result(path)

    def pct(value) -> str:
        return "" if value is None else f"{value:.2%}"

    rows = "".join(
        f"<tr><td>{html.escape(str(c['msa']))}</td><td class=num>{pct(c['accuracy'])}</td>"
        f"<td class=num>{pct(c.get('test_accuracy'))}</td>"
        f"<td>{'kept' if c['kept'] else 'rejected'}</td></tr>"
        for c in r.candidates
    )
    split = html.escape(getattr(r, "decided_on", "validation"))
    return (
        f"<h3>Build-up search</h3><p>Each placement was kept or rejected on the {split} split; "
        "test accuracy is reported only, never used to choose.</p><table><tr>"
        "<th>MSA blocks per stage</th><th class=num>val acc</th><th class=num>test acc</th>"
        f"<th>decision</th></tr>{rows}</table>"
    )


def _claims_table(views: list[StudyView]) -> str:
    css = {"holds": "yes", "does not hold": "no", "inconclusive": "na", "not measured": "na"}
    css[UNTESTABLE] = "na"
    rows = []
    for v in evaluate_claims(views):
        c, word = v.claim, v.verdict if v.verdict != "not measured" else "n/a"
        spread = f"<br><small>{html.escape(v.spread)}</small>" if v.spread else ""
        rows.append(
            f"<tr><td>{c.id}</td><td>{html.escape(c.claim)}</td><td>{html.escape(c.paper)}</td>"
            f"<td>{html.escape(c.measured)}</td>"
            f"<td><span class={css[v.verdict]}>{word}</span>{spread}</td></tr>"
        )
    return (
        "<table><tr><th>#</th><th>claim</th><th>paper</th><th>this study</th><th>here</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _missing_box(folder: StudyFolder, steps: dict[str, Any]) -> str:
    """Steps not done, and Results recorded as done whose file is gone: named, not hidden."""
    missing = [
        f"{name} ({record.get('status', 'not done')})"
        for name, record in steps.items()
        if record.get("status") != "done"
    ]
    for name, record in steps.items():
        if record.get("status") == "done":
            gone = folder.missing_outputs(record)
            missing += [f"{name} (its output {p} is missing)" for p in gone]
    if not missing:
        return ""
    items = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    return (
        "<div class=scale><b>Not everything ran.</b> These steps have no Result, so the figures "
        f"and claims that need them are missing or marked not measured:<ul>{items}</ul>"
        f"<code>vitlens study --resume {html.escape(str(folder.root))}</code> runs them.</div>"
    )


def _checks_box(view: StudyView) -> str:
    """The preconditions the claims declare, checked on this study (first seed): a claim
    whose check fails reads "not testable at this scale"."""
    rows = []
    for ids, c in scale_checks(view):
        word = {True: "passes", False: "fails", None: "unchecked"}[c.ok]
        rows.append(
            f"<tr><td>{html.escape(c.model)}</td><td>{html.escape(c.name)}</td>"
            f"<td>{html.escape(c.detail)}</td><td>{word}</td><td>{html.escape(ids)}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<div class=scale><b>Can this scale test the claims?</b> Each claim names what its "
        f"models must have learned: MSAs that attend (most MSA blocks below "
        f"{ATTENDING_SHARE:.0%} of the uniform entropy log N) and models above chance (test "
        f"accuracy at least {CHANCE_FACTOR:g}× chance). A claim whose check fails reads "
        f"<i>{UNTESTABLE}</i>.<table><tr><th>model</th><th>check</th><th>measured</th>"
        f"<th></th><th>claims</th></tr>{''.join(rows)}</table></div>"
    )


def attention_sanity_line(model: str, result) -> str:
    """How far each MSA block's attention is from uniform: mean entropy as a share of log N."""
    shares = attention_share(result)
    attending = sum(s < ATTENDING_SHARE for s in shares)
    values = ", ".join(f"{s:.1%}" for s in shares)
    return (
        f"{model}: mean attention entropy per MSA block as a share of the uniform log N: {values} "
        f"({attending} of {len(shares)} blocks below {ATTENDING_SHARE:.0%}, i.e. attending)"
    )


def _attention_sanity(view: StudyView) -> str:
    lines = [
        attention_sanity_line(m, r)
        for m in view.models
        if (r := view.result("attention", m)) is not None and r.names
    ]
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<p><b>Has each model learned to attend?</b></p><ul>{items}</ul>"


def _section(key: str, view: StudyView, figures, folder: StudyFolder) -> list[str]:
    """One of the paper's three questions: its intro, then its tables and figures."""
    from vitlens.analysis.registry import analyses
    from vitlens.analysis.spec import SECTIONS

    parts = [f"<h2>{html.escape(SECTIONS[key])}</h2><p>{html.escape(INTROS[key])}</p>"]
    if key == "inside":
        parts.append(_attention_sanity(view))
    if key == "optimization" and view.runs:
        parts.append(
            f"<figure>{_accuracy_table(view.runs, view.results)}<figcaption>"
            f"{html.escape(ACCURACY_CAPTION)}</figcaption></figure>"
        )
    for spec in analyses():
        for figure in spec.figures if spec.section == key else ():
            if figure.name in figures:
                parts.append(_figure_html(*figures[figure.name]))
    if key == "optimization":
        parts += [_figure_html(*figures[name]) for name in figures if name.startswith("ablation_")]
    if key == "harmonize":
        parts.append(_buildup_table(folder))
    return parts


def _figure_html(path: Path, caption: str) -> str:
    return f"<figure>{_img(path)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def seed_views(plan, results, rows) -> list[StudyView]:
    """One StudyView per seed: the study's models under their own names, with that seed's
    ablation members under their keys."""
    from vitlens.ablations import comparisons, seeded

    views = []
    for seed in range(plan.seeds):
        names = {seeded(m, seed): m for m in plan.models}
        comps = comparisons(plan, seed)
        names.update({k: k for pairs in comps.values() for _, k in pairs if k not in names})

        def pick(by_key: dict, names=names) -> dict:
            return {names[k]: v for k, v in by_key.items() if k in names}

        views.append(
            StudyView(
                {a: pick(by) for a, by in results.items()},
                pick(rows),
                list(plan.models),
                {m: plan.family(m) for m in plan.models},
                comps,
            )
        )
    return views


def _ablation_figures(view: StudyView, folder: StudyFolder) -> dict[str, tuple[Path, str]]:
    from vitlens.report.plots.ablations import FIGURES

    drawn = {}
    for name, draw, caption in FIGURES:
        path = draw(view, folder.figures / f"{name}.png")
        if path is not None:
            drawn[name] = (path, caption)
    return drawn


def write_report(folder: str | Path) -> Path:
    """Draw every figure from the saved Results of a study and write `report.html`, holding
    the study's lock (a study still running refuses)."""
    folder = StudyFolder(Path(folder))
    with folder_lock(folder.root, "study folder"):  # not while a study writes here
        return _write_report(folder)


def _write_report(folder: StudyFolder) -> Path:
    from vitlens.ablations import study_members
    from vitlens.plan import StudyPlan

    plan_data, steps = folder.read_state()
    plan = StudyPlan.from_json(plan_data, where=folder.plan_file)
    results = load_study_results(folder)
    run_paths = {m.key: plan.run_path(m.key, folder) for m in study_members(plan)}
    rows = load_run_rows(run_paths)
    facts = [run_facts(key, path) for key, path in run_paths.items()]
    wall = sum(s.get("seconds", 0) for s in steps.values())
    views = seed_views(plan, results, rows)
    main = views[0]  # figures and tables show the first seed's models
    figures = draw_study_figures(folder, main.results)
    figures.update(_ablation_figures(main, folder))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>vitlens study: {html.escape(plan.dataset)}</title><style>{STYLE}</style>",
        "</head><body><main>",
        "<h1>How do vision transformers work?</h1>",
        f"<p>A vitlens study of Park &amp; Kim (ICLR 2022), written "
        f"{datetime.date.today().isoformat()}.</p>",
        scale_box(plan_data, facts, wall),
        _missing_box(folder, steps),
        _checks_box(views[0]),
        "<h2>The paper's claims, measured here</h2>",
        _claims_table(views),
    ]
    for key in INTROS:
        parts += _section(key, main, figures, folder)
    parts.append("</main></body></html>")
    atomic_write_text(folder.report, "\n".join(parts))
    return folder.report

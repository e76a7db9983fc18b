"""What the claims would say had the Hessian used only the first n minibatches of a finished
study: the Results are re-pooled from their saved per-minibatch eigenvalues (minibatch i is the
same at every budget), and every claim is re-checked with the current code.

    python benchmarks/hessian_budget_whatif.py STUDY [STUDY ...] [--counts 10,8,6,5,4]

Used to choose the quick preset's Hessian budget: a smaller budget is acceptable where no
verdict changes for a reason other than noise.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vitlens.ablations import study_members
from vitlens.analysis.hessian import HessianResult, nep_ape
from vitlens.folders import StudyFolder
from vitlens.plan import StudyPlan
from vitlens.report.claims import evaluate_claims
from vitlens.report.html import load_run_rows, load_study_results, seed_views

HESSIAN_CLAIMS = ("C4", "C5", "C6", "C7", "C15", "C16")


def verdicts(study: Path, n: int):
    """Every claim's verdict with each Hessian Result cut to its first `n` minibatches."""
    folder = StudyFolder(study)
    plan_data, _ = folder.read_state()
    plan = StudyPlan.from_json(plan_data, where=folder.plan_file)
    results = load_study_results(folder)
    for by_model in results.values():
        for key, result in list(by_model.items()):
            if isinstance(result, HessianResult):
                rows = result.eigenvalues[:n]
                nep, ape = nep_ape(v for row in rows for v in row)
                by_model[key] = dataclasses.replace(result, eigenvalues=rows, nep=nep, ape=ape)
    runs = load_run_rows({m.key: plan.run_path(m.key, folder) for m in study_members(plan)})
    return evaluate_claims(seed_views(plan, results, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--counts", default="10,8,6,5,4")
    args = parser.parse_args()
    for study in args.studies:
        for n in (int(c) for c in args.counts.split(",")):
            found = verdicts(study, n)
            print(
                f"{study} minibatches={n}: " + " ".join(f"{v.claim.id}:{v.verdict}" for v in found)
            )
            for v in found:
                if v.claim.id in HESSIAN_CLAIMS:
                    print(f"    {v.claim.id} {v.verdict}: {v.claim.unreadable or v.claim.measured}")


if __name__ == "__main__":
    main()

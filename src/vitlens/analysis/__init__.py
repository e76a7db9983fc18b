"""Analyses of the paper, one module each: pure functions from (model, data) to a Result."""

from vitlens.analysis.result import Provenance, Result, load_result, result_from_dict

__all__ = ["Provenance", "Result", "load_result", "result_from_dict"]

"""Figures and the HTML report, drawn only from saved Results (DESIGN.md §1, §4)."""

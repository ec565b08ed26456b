"""Bit decisions: pure allocation rules from an importance order or measured costs to per-layer widths under a
budget (allocate), and the plan a `compress run` quantizes by (planner: BitsConfig, make_plan)."""

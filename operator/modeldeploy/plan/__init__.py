"""Spec + catalog + operator defaults -> a resolved plan; GPU sizing. No I/O."""

from .planner import (
           CACHE_MOUNT,
           WEIGHTS_DIR,
           CachePlan,
           Placement,
           Plan,
           describe,
           make_plan,
           plan_for,
)

__all__ = ["CACHE_MOUNT", "WEIGHTS_DIR", "CachePlan", "Placement", "Plan", "describe",
           "make_plan", "plan_for"]

"""Batch runs over a cohort: a resumable results.csv, shards for job arrays, and an optional Ray engine.

`unet3d predict INPUTS -o DIR` is the command; this package holds what it does, so that other front-ends (and the
later GPU pipeline, as one more `Engine`) share one set of rules. Ray is imported only by `unet3d.batch.ray_engine`.
"""

from .inputs import Case, find_sources, parse_shard, plan_cases, select_shard
from .manifest import MANIFEST_NAME, Outcome, manifest_columns, merge_shards
from .runner import Batch, BatchReport, Engine, LocalEngine, PredictOptions, predict_case, prepare_batch, run_batch

__all__ = [
    "MANIFEST_NAME",
    "Batch",
    "BatchReport",
    "Case",
    "Engine",
    "LocalEngine",
    "Outcome",
    "PredictOptions",
    "find_sources",
    "manifest_columns",
    "merge_shards",
    "parse_shard",
    "plan_cases",
    "predict_case",
    "prepare_batch",
    "run_batch",
    "select_shard",
]

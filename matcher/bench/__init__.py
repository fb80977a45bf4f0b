"""The recall benchmark (``matcher bench``), one module per stage: plant seeded copies of real photos
(plant.py), build and search an index (run.py), score every match (score.py), write the reports (write.py);
common.py holds the constants, the pool and the baselines' hashes."""

from matcher.bench.common import (FACE_FAMILY, FACE_TRANSFORM, HOLDOUT, PDQ_BASELINE, PHASH_BASELINE, SWEEP_MAX, BenchError,
                                  machine_info, sniff_ext)
from matcher.bench.plant import CopyRow, Planting, check_out_dir, plant_copies, same_scene_pairs
from matcher.bench.run import run_bench
from matcher.bench.score import Query, Truth, score
from matcher.bench.write import markdown_table, plot_sweep, print_table, write_json, write_markdown, write_reports

__all__ = ["SWEEP_MAX", "HOLDOUT", "PHASH_BASELINE", "PDQ_BASELINE", "FACE_TRANSFORM", "FACE_FAMILY", "BenchError",
           "run_bench", "plant_copies", "Planting", "CopyRow", "same_scene_pairs", "check_out_dir", "Query", "Truth",
           "score", "write_reports", "write_json", "write_markdown", "plot_sweep", "print_table", "markdown_table",
           "sniff_ext", "machine_info"]

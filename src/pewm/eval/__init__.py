"""Evaluation: the Table-1 metrics (:mod:`~pewm.eval.metrics`), revisit/novel classification
(:mod:`~pewm.eval.revisit`), result aggregation, reports and plots (:mod:`~pewm.eval.report`), the
generation benchmark (:mod:`~pewm.eval.benchmark`, ``pewm eval``), imagined walks in unseen houses
(:mod:`~pewm.eval.walks`) and the long-horizon probe, episode videos and maps."""

from pewm.eval.metrics import (
    METRICS,
    PSNR_MAX_DB,
    ColorLayoutFeatures,
    DinoV2GlobalFeatures,
    GlobalFeatures,
    depth_absrel,
    depth_delta1,
    frame_metrics,
    match_first_visits,
    psnr,
    src,
    src_at_matches,
    ssim,
)
from pewm.eval.report import (
    CLASSES,
    aggregate,
    plot_psnr_vs_step,
    results_markdown,
    side_by_side_video,
    write_results_json,
    write_results_md,
)
from pewm.eval.revisit import classify, observed_fraction

__all__ = [
    "CLASSES",
    "METRICS",
    "PSNR_MAX_DB",
    "ColorLayoutFeatures",
    "DinoV2GlobalFeatures",
    "GlobalFeatures",
    "aggregate",
    "classify",
    "depth_absrel",
    "depth_delta1",
    "frame_metrics",
    "match_first_visits",
    "observed_fraction",
    "plot_psnr_vs_step",
    "psnr",
    "results_markdown",
    "side_by_side_video",
    "src",
    "src_at_matches",
    "ssim",
    "write_results_json",
    "write_results_md",
]

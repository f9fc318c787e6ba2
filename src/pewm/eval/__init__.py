"""Evaluation: the Table-1 metrics (:mod:`~pewm.eval.metrics`), revisit/novel classification
(:mod:`~pewm.eval.revisit`), result aggregation, reports and plots (:mod:`~pewm.eval.report`), the
generation benchmark (:mod:`~pewm.eval.benchmark`, ``pewm eval``) with its cut protocols
(:mod:`~pewm.eval.cuts`), no-model baselines (:mod:`~pewm.eval.baselines`) and split-level
statistics with bootstrap intervals over episodes (:mod:`~pewm.eval.aggregate`), imagined walks in
unseen houses (:mod:`~pewm.eval.walks`) and the long-horizon probe, episode videos and maps."""

from pewm.eval.metrics import (
    METRICS,
    PSNR_MAX_DB,
    ColorLayoutFeatures,
    DinoV2GlobalFeatures,
    GlobalFeatures,
    depth_absrel,
    depth_delta1,
    frame_metrics,
    gradient_magnitude,
    match_first_visits,
    mse,
    psnr,
    sharpness,
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
    "gradient_magnitude",
    "match_first_visits",
    "mse",
    "observed_fraction",
    "plot_psnr_vs_step",
    "psnr",
    "results_markdown",
    "sharpness",
    "side_by_side_video",
    "src",
    "src_at_matches",
    "ssim",
    "write_results_json",
    "write_results_md",
]

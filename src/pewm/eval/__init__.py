"""Evaluation: videos and plots, the Table-1 metrics (:mod:`~pewm.eval.metrics`), revisit/novel
classification (:mod:`~pewm.eval.revisit`) and result aggregation/reports (:mod:`~pewm.eval.report`);
the generation benchmark itself comes later."""

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

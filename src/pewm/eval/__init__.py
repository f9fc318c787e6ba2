"""Evaluation: videos and plots now; metrics and the generation benchmark later."""

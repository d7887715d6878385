"""The head-to-head comparison (``genarena-compare``): train the tokenizers and the paradigms, evaluate them
with reference rows, write the report. :func:`run_comparison` is the whole job."""

from genarena.comparison.pipeline import run_comparison

__all__ = ["run_comparison"]

"""sncn: SelfNorm and CrossNorm for out-of-distribution robustness (layers, models, corruptions,
experiments); see the README."""

__version__ = "0.1.0"  # the one place of the version (pyproject.toml reads it)

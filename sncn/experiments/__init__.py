"""Experiment recipes, one module per notebook: build, train, evaluate, tabulate."""

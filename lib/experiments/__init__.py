"""Experiments: compare runs, and sweep hyperparameters through the training queue."""

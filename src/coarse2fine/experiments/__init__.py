"""Experiments made of several runs: a baseline against coarse-to-fine variants (:mod:`.grid`,
with cross-validation folds) and pretraining compared through its downstream tasks
(:mod:`.pretraining`)."""

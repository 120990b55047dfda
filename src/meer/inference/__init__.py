"""Running a trained network: the checkpoint format and model loading
(:mod:`meer.inference.checkpoint`) and batched forward passes over aligned faces
(:mod:`meer.inference.batched`).

The public API (:mod:`meer.api`), training and evaluation all use this package; it imports
nothing from :mod:`meer.train` or :mod:`meer.eval`.
"""

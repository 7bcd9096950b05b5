"""Training: trainers, their registry, the train -> evaluate -> save -> gate -> promote pipeline.

Workers call :func:`training.pipeline.run_training` and :func:`training.serialization.load_model`;
people call ``python -m training``.
"""

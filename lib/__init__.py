"""Shared code for the sf-dl-car-classification notebook series: one module per concern."""

import os

# The one place for environment defaults. Every module of lib is imported through this file first, so they are
# set before albumentations or TensorFlow is imported: no PyPI version check, quieter logs.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CLASSES = 10
COMPETITION = "sf-dl-car-classification"

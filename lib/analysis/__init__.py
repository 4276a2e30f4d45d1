"""What a run got wrong and whether the data is clean: per-class errors, calibration, Grad-CAM, duplicate photos."""

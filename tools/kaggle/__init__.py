"""The Kaggle round trip: the `kaggle` CLI wrapper, data download, submission upload, the series as a kernel."""

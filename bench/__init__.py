"""Benchmarks beside the product: `make bench`, `make bench-duplicates`, and the GPU bench for a lent machine."""

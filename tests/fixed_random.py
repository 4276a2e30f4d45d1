"""A stand-in for np.random.Generator that makes augmentation draws predictable in tests."""

import numpy as np


class FixedRandom:
    """random() from a list, uniform() at the middle of its range (a neutral affine)."""

    def __init__(self, draws):
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)

    def uniform(self, low, high, size=None):
        middle = (low + high) / 2.0
        return middle if size is None else np.full(size, middle)

"""The embedded default: scikit-learn's bundled 8x8 digits and a small CNN trained on the fly; needs no network
and no data root. The images and their split live in `data` (`load_digits_split`, `digits_test_ids`,
`digits_attack_set`), the CNN's training and cache in `models.digits_cnn`; this module gathers both.
"""
from __future__ import annotations

from .data import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, digits_attack_set, digits_test_ids, load_digits_split
from .models.digits_cnn import DIGITS_RECIPE, NAME, digits_cache_path, get_digits_model, train_digits_cnn

__all__ = ["DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "DIGITS_RECIPE", "NAME", "load_digits_split",
           "digits_test_ids", "digits_attack_set", "digits_cache_path", "train_digits_cnn", "get_digits_model"]

"""Data sets: training triplets and the published evaluation sets."""

from datasets.benchmark_sets import (
    BENCHMARK_SETS,
    BenchmarkItem,
    BenchmarkSet,
    DatasetNotFoundError,
    load_benchmark_set,
    middlebury_items,
    ucf101_items,
    vimeo_test_items,
)

__all__ = [
    "BENCHMARK_SETS",
    "BenchmarkItem",
    "BenchmarkSet",
    "DatasetNotFoundError",
    "load_benchmark_set",
    "middlebury_items",
    "ucf101_items",
    "vimeo_test_items",
]

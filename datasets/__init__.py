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
from datasets.vimeo import LIST_FILES, TripletListError, VimeoTriplets, read_triplet_list, synthetic_triplet

__all__ = [
    "BENCHMARK_SETS",
    "LIST_FILES",
    "BenchmarkItem",
    "BenchmarkSet",
    "DatasetNotFoundError",
    "TripletListError",
    "VimeoTriplets",
    "load_benchmark_set",
    "middlebury_items",
    "read_triplet_list",
    "synthetic_triplet",
    "ucf101_items",
    "vimeo_test_items",
]

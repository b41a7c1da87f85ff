"""Datasets, splits and label budgets, stage by stage.

A dataset that fits (``dataset.residency`` device or host, or ``auto`` by size) is decoded once
into a uint8 array (N, C, H, W) plus int64 labels; decoded arrays are cached on disk by a key of
the source file(s) and the decoding options, so a second sweep over the same data does not decode
again. A dataset that does not fit streams: only its index (shard and row of every image) and
labels are prepared, and each trial reads the images while it trains. Splits and label subsets are pure functions of the labels and a
seed: every method, every trial and every node computes the same ones. No torch here.

- :mod:`~sslsweep.data.sources`: digits, Parquet files and image folders; labels without decoding.
- :mod:`~sslsweep.data.decode`: encoded images to arrays.
- :mod:`~sslsweep.data.cache`: the decoded-array cache.
- :mod:`~sslsweep.data.splits`: train/val/test splits and nested label budgets.
- :mod:`~sslsweep.data.selection`: which images to label, from features alone (TypiClust).
- :mod:`~sslsweep.data.prepare`: the arrays a sweep's trials share.
- :mod:`~sslsweep.data.facts`: what the data-dependent rules need, one image decoded.
- :mod:`~sslsweep.data.residency`: where a trial keeps the images (device, host, stream), by size.
- :mod:`~sslsweep.data.stream`: the streaming path: shards read while a trial trains.
"""

from sslsweep.data.facts import DataFacts, read_facts
from sslsweep.data.prepare import Prepared, fingerprint, prepare
from sslsweep.data.residency import RESIDENCIES, ResidencyPlan, plan_residency
from sslsweep.data.selection import SELECTIONS, typical_subset
from sslsweep.data.sources import ImageSet, load_digits, read_labels
from sslsweep.data.splits import Splits, budget_subset, budgets, label_subset, make_splits
from sslsweep.data.stream import StreamError, StreamIndex, StreamReader

__all__ = [
    "DataFacts",
    "ImageSet",
    "Prepared",
    "RESIDENCIES",
    "ResidencyPlan",
    "SELECTIONS",
    "Splits",
    "StreamError",
    "StreamIndex",
    "StreamReader",
    "budget_subset",
    "budgets",
    "fingerprint",
    "label_subset",
    "load_digits",
    "make_splits",
    "plan_residency",
    "prepare",
    "read_facts",
    "read_labels",
    "typical_subset",
]

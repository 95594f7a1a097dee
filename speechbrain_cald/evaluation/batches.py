"""Evaluation batches of whole utterances, bounded by padded audio seconds (stage 4 of the speech recipes)."""

from __future__ import annotations

from typing import List, Sequence

from speechbrain.dataio.batch import PaddedBatch
from torch.utils.data import DataLoader

__all__ = ["batches_by_seconds", "loader_by_seconds"]


def batches_by_seconds(durations: Sequence[float], max_seconds: float) -> List[List[int]]:
    """Consecutive index batches whose padded length (count x longest) stays within ``max_seconds``.

    Example
    -------
    >>> batches_by_seconds([1, 1, 2, 2, 5], 4)
    [[0, 1], [2, 3], [4]]
    """
    batches, current, longest = [], [], 0.0
    for i, d in enumerate(durations):
        longest_new = max(longest, d)
        if current and longest_new * (len(current) + 1) > max_seconds:
            batches.append(current)
            current, longest_new = [], d
        current.append(i)
        longest = longest_new
    if current:
        batches.append(current)
    return batches


def loader_by_seconds(dataset, max_seconds: float) -> DataLoader:
    """``PaddedBatch`` batches of a (duration-sorted) SpeechBrain dataset in its order, by :func:`batches_by_seconds`.

    The dataset's items have a ``duration`` (seconds) in its data.
    """
    durations = [float(dataset.data[i]["duration"]) for i in dataset.data_ids]
    return DataLoader(dataset, batch_sampler=batches_by_seconds(durations, max_seconds), collate_fn=PaddedBatch)

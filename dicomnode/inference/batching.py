"""Split a large first-axis batch (e.g. 360 cine frames) into chunks a model accepts, then concatenate."""
from __future__ import annotations

from typing import Callable

import numpy as np


def chunk_bounds(total: int, max_batch: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most `max_batch` items covering `total` items, sizes as even as possible."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if total == 0:
        return []
    chunks = -(-total // max_batch)
    base, extra = divmod(total, chunks)
    bounds, start = [], 0
    for index in range(chunks):
        stop = start + base + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def run_in_chunks(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, max_batch: int) -> np.ndarray:
    """`run` over first-axis chunks of `inputs` of at most `max_batch`, outputs concatenated along the first axis."""
    if inputs.ndim == 0:
        raise ValueError("inputs must have a batch (first) axis")
    if inputs.shape[0] == 0:
        raise ValueError(f"inputs have an empty batch axis: shape {inputs.shape}")
    if inputs.shape[0] <= max_batch:
        return run(inputs)
    outputs = [run(inputs[start:stop]) for start, stop in chunk_bounds(inputs.shape[0], max_batch)]
    return np.concatenate(outputs, axis=0)

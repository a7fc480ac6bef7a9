"""Length-bucketed batches and padding, shared by every batched model computation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early).

    Sorting by length cuts the padding of a batch to the spread of its lengths; the caller
    scatters results back by index, so the output order is the input order. With
    ``max_tokens`` (a memory budget's, :mod:`dataplan.compute.memory`) a batch also ends before
    its padded size (count × its first, longest length) would pass it; one example always
    forms a batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        if batch and (
            len(batch) >= batch_size
            or (max_tokens is not None and (len(batch) + 1) * lengths[batch[0]] > max_tokens)
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, *, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (B, T_max), padded on ``side``."""
    t_max = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), t_max), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        if side == "right":
            ids[row, :n] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, :n] = 1
        elif side == "left":
            ids[row, t_max - n :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, t_max - n :] = 1
        else:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return ids, mask


def forward_kept(model: torch.nn.Module, keep: int, **inputs: Any) -> Any:
    """``model(**inputs)`` computing the logits of the last ``keep`` positions only when the
    architecture supports ``logits_to_keep`` (the vocabulary projection is the costly part);
    slice ``.logits[:, -keep:]`` of the output either way."""
    try:
        return model(**inputs, logits_to_keep=keep)
    except TypeError:  # an architecture without logits_to_keep: compute all
        return model(**inputs)


def forward_kept_logits(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, keep: int
) -> torch.Tensor:
    """Logits of the last ``keep`` positions, (B, keep, V) (see :func:`forward_kept`)."""
    return forward_kept(model, keep, input_ids=ids, attention_mask=mask).logits[:, -keep:]

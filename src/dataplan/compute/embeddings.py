"""Text embeddings from the model itself: mean-pooled last hidden states (tensors in, arrays out).

[our choice, docs/methods.md §6] The ICA paper retrieves demonstrations with a sentence-embedding
model; the model being trained embeds its own inputs here, so nothing else must be downloaded::

    e_i = (1/T_i) Σ_t h_L(x_i)_t        (h_L: last hidden layer, T_i: the text's tokens)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dataplan.compute.batching import length_sorted_batches, pad_batch


@torch.no_grad()
def mean_pooled_embeddings(
    model: Any,
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """(N, H) float64: the mean of the last hidden layer over each sequence's tokens."""
    device = next(model.parameters()).device
    out: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        batches = list(length_sorted_batches([len(t) for t in token_ids], batch_size))
        for idx in tqdm(batches, desc="embeddings", disable=not progress):
            ids, mask = pad_batch([token_ids[i] for i in idx], pad_id, side="right")
            hidden = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
            ).hidden_states[-1]
            m = mask.to(device).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
            if out is None:
                out = np.zeros((len(token_ids), pooled.shape[-1]), dtype=np.float64)
            out[idx] = pooled.double().cpu().numpy()
    finally:
        model.train(was_training)
    assert out is not None, "no sequences to embed"
    return out

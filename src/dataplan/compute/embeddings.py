"""Text embeddings for retrieving demonstrations (tensors in, arrays out).

[our choice, docs/methods.md §6] The ICA paper retrieves demonstrations with a sentence-embedding
model. By default the model being trained embeds its own inputs, so nothing else must be
downloaded::

    e_i = (1/T_i) Σ_t h_L(x_i)_t        (h_L: last hidden layer, T_i: the text's tokens)

or, as the paper does, a named sentence-transformers model (the optional extra
``dataplan[embeddings]``) embeds the texts.
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


def sentence_embeddings(
    name: str,
    texts: Sequence[str],
    *,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """(N, D) float64 embeddings of ``texts`` by the sentence-transformers model ``name`` (a local
    folder or a hub id), as that model's own pooling and normalisation define them.

    Raises:
        ConfigError: sentence-transformers is not installed, or the model cannot be loaded.
    """
    from dataplan.errors import ConfigError

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ConfigError(
            f"--embedder {name} needs sentence-transformers: pip install 'dataplan[embeddings]' "
            "(or use --embedder model, the trained model's own hidden states)"
        ) from err
    try:
        # No remote code: a model's own modules are never executed (docs/methods.md §6).
        encoder = SentenceTransformer(
            name, device=None if device is None else str(device), trust_remote_code=False
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"--embedder {name}: cannot load a sentence-transformers model ({err})"
        ) from None
    vectors = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
    )
    return np.asarray(vectors, dtype=np.float64)

"""Multiple-choice scoring by option log-likelihood (the standard lm-eval-harness ``acc``).

For a prompt x and options o_1..o_K, the prediction is ``argmax_k log p(o_k, end | x)``, the
summed log-probability of the option's tokens followed by the end-of-turn token — the end token
keeps an option that is a prefix of another from winning by being shorter [our choice]. With
``length_normalise`` the sum is divided by the number of scored tokens (``acc_norm``-like).
A small model's zero-shot exact match is dominated by its answer format; this score is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dataplan.compute.batching import length_sorted_batches, pad_batch
from dataplan.data.formatting import Encoded, PromptFormatter
from dataplan.data.loading import Example


def _kept_logits(model, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    try:
        return model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, -keep:]
    except TypeError:  # an architecture without logits_to_keep
        return model(input_ids=ids, attention_mask=mask).logits[:, -keep:]


@torch.no_grad()
def sequence_logprobs(
    model, encoded: Sequence[Encoded], pad_id: int, *, batch_size: int = 32, progress: bool = False
) -> list[tuple[float, int]]:
    """(Σ log p(answer + end tokens | prompt), number of scored tokens) of every sequence."""
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    lengths = [len(e.prompt_ids) + len(e.answer_ids) + len(e.end_ids) for e in encoded]
    for idx in tqdm(
        list(length_sorted_batches(lengths, batch_size)), desc="options", disable=not progress
    ):
        seqs = [encoded[i].input_ids(with_end=True) for i in idx]
        ids, mask = pad_batch(seqs, pad_id, side="right")
        t_max = ids.shape[1]
        # Only the positions that predict option tokens need logits (the vocabulary is large).
        first = min(len(encoded[i].prompt_ids) - 1 for i in idx)
        keep = t_max - first
        logits = _kept_logits(model, ids.to(device), mask.to(device), keep)  # (B, keep, V)
        logp = F.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(idx):
            e = encoded[i]
            start = len(e.prompt_ids) - 1
            stop = start + len(e.answer_ids) + len(e.end_ids)
            targets = ids[row, start + 1 : stop + 1].to(device)
            picked = logp[row, start - first : stop - first].gather(-1, targets.unsqueeze(-1))
            out[i] = (float(picked.sum()), stop - start)
    return out


def option_predictions(
    model,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    pad_id: int,
    *,
    length_normalise: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> list[str]:
    """The highest-likelihood option of every example (each must have ``choices``)."""
    pairs: list[tuple[int, str]] = []
    encoded: list[Encoded] = []
    for k, ex in enumerate(examples):
        if not ex.choices:
            raise ValueError(f"example {ex.id} has no choices")
        prompt_ids = tuple(formatter.prompt_ids(ex.prompt))
        for choice in ex.choices:
            pairs.append((k, choice))
            encoded.append(
                Encoded(prompt_ids, tuple(formatter.answer_ids(choice)), formatter.end_ids)
            )
    scores = sequence_logprobs(model, encoded, pad_id, batch_size=batch_size, progress=progress)
    best: dict[int, tuple[float, str]] = {}
    for (k, choice), (logp, count) in zip(pairs, scores, strict=True):
        value = logp / count if length_normalise else logp
        if k not in best or value > best[k][0]:
            best[k] = (value, choice)
    return [best[k][1] for k in range(len(examples))]

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


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


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
        logp = F.log_softmax(_at_least_fp32(logits), dim=-1)
        for row, i in enumerate(idx):
            e = encoded[i]
            start = len(e.prompt_ids) - 1
            stop = start + len(e.answer_ids) + len(e.end_ids)
            targets = ids[row, start + 1 : stop + 1].to(device)
            picked = logp[row, start - first : stop - first].gather(-1, targets.unsqueeze(-1))
            out[i] = (float(picked.sum()), stop - start)
    return out


@torch.no_grad()
def shared_prompt_option_logprobs(
    model, prompt_ids: Sequence[int], options: Sequence[Sequence[int]], pad_id: int
) -> list[tuple[float, int]]:
    """(Σ log p(option | prompt), tokens) of every option, the prompt computed once.

    The prompt runs once with a KV cache; the cache is repeated for the K options, which run
    together right-padded. Scores equal :func:`sequence_logprobs` of each full sequence (tested),
    at the cost of one prompt instead of K.
    """
    device = next(model.parameters()).device
    prompt = torch.as_tensor([list(prompt_ids)], device=device)
    out = model(input_ids=prompt, use_cache=True)
    first_logp = torch.log_softmax(
        _at_least_fp32(out.logits[0, -1]), dim=-1
    )  # predicts option token 0
    cache = out.past_key_values
    k = len(options)
    cache.batch_repeat_interleave(k)
    ids, mask = pad_batch(options, pad_id, side="right")
    ids, mask = ids.to(device), mask.to(device)
    full_mask = torch.cat(
        [torch.ones(k, prompt.shape[1], dtype=mask.dtype, device=device), mask], dim=1
    )
    logits = model(
        input_ids=ids, attention_mask=full_mask, past_key_values=cache, use_cache=False
    ).logits
    logp = torch.log_softmax(
        _at_least_fp32(logits), dim=-1
    )  # position j predicts option token j + 1
    scores = []
    for row, opt in enumerate(options):
        total = float(first_logp[opt[0]])
        if len(opt) > 1:
            targets = ids[row, 1 : len(opt)]
            total += float(logp[row, : len(opt) - 1].gather(-1, targets.unsqueeze(-1)).sum())
        scores.append((total, len(opt)))
    return scores


def option_predictions(
    model,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    pad_id: int,
    *,
    length_normalise: bool = False,
    progress: bool = False,
) -> list[str]:
    """The highest-likelihood option of every example (each must have ``choices``); ties go to
    the first option."""
    predictions = []
    for ex in tqdm(examples, desc="options", disable=not progress):
        if not ex.choices:
            raise ValueError(f"example {ex.id} has no choices")
        options = [[*formatter.answer_ids(c), *formatter.end_ids] for c in ex.choices]
        scores = shared_prompt_option_logprobs(
            model, formatter.prompt_ids(ex.prompt), options, pad_id
        )
        values = [logp / count if length_normalise else logp for logp, count in scores]
        predictions.append(ex.choices[max(range(len(values)), key=values.__getitem__)])
    return predictions

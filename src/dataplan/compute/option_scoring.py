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

from dataplan.compute.batching import (
    forward_kept,
    forward_kept_logits,
    length_sorted_batches,
    pad_batch,
)
from dataplan.data.formatting import Encoded, PromptFormatter
from dataplan.data.loading import Example


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


@torch.no_grad()
def sequence_logprobs(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    pad_id: int,
    *,
    batch_size: int = 32,
    progress: bool = False,
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
        logits = forward_kept_logits(model, ids.to(device), mask.to(device), keep)  # (B, keep, V)
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
    model: torch.nn.Module, prompt_ids: Sequence[int], options: Sequence[Sequence[int]], pad_id: int
) -> list[tuple[float, int]]:
    """(Σ log p(option | prompt), tokens) of every option of one prompt (see the batched form)."""
    return batched_option_logprobs(model, [prompt_ids], [options], pad_id)[0]


@torch.no_grad()
def batched_option_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    options: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
) -> list[list[tuple[float, int]]]:
    """(Σ log p(option | prompt), tokens) of every option of every prompt, each prompt once.

    The E prompts run together, left-padded (explicit position ids), filling a KV cache; the cache
    rows are then repeated so that every option (R in all) continues its own prompt, right-padded.
    Scores equal :func:`sequence_logprobs` of each full sequence (tested), at the cost of E
    prompts instead of R.
    """
    device = next(model.parameters()).device
    ids_p, mask_p = pad_batch(prompts, pad_id, side="left")
    ids_p, mask_p = ids_p.to(device), mask_p.to(device)
    pos_p = (mask_p.cumsum(-1) - 1).clamp(min=0)
    # Only the last prompt position's logits are needed: the vocabulary projection of every
    # other position would cost more than the whole option pass on long prompts.
    out = forward_kept(
        model, 1, input_ids=ids_p, attention_mask=mask_p, position_ids=pos_p, use_cache=True
    )
    first_logp = torch.log_softmax(
        _at_least_fp32(out.logits[:, -1]), dim=-1
    )  # (E, V): option token 0
    cache = out.past_key_values
    owner = [e for e, opts in enumerate(options) for _ in opts]
    flat = [list(o) for opts in options for o in opts]
    index = torch.as_tensor(owner, device=device)
    cache.batch_select_indices(index)  # (R, …): row r continues prompt owner[r]
    ids_o, mask_o = pad_batch(flat, pad_id, side="right")
    ids_o, mask_o = ids_o.to(device), mask_o.to(device)
    full_mask = torch.cat([mask_p[index], mask_o], dim=1)
    pos_o = mask_p.sum(-1)[index][:, None] + torch.arange(ids_o.shape[1], device=device)[None, :]
    logits = model(
        input_ids=ids_o,
        attention_mask=full_mask,
        position_ids=pos_o,
        past_key_values=cache,
        use_cache=False,
    ).logits
    logp = torch.log_softmax(
        _at_least_fp32(logits), dim=-1
    )  # position j predicts option token j + 1
    scores: list[list[tuple[float, int]]] = [[] for _ in prompts]
    for row, (e, opt) in enumerate(zip(owner, flat, strict=True)):
        total = float(first_logp[e, opt[0]])
        if len(opt) > 1:
            targets = ids_o[row, 1 : len(opt)]
            total += float(logp[row, : len(opt) - 1].gather(-1, targets.unsqueeze(-1)).sum())
        scores[e].append((total, len(opt)))
    return scores


def option_predictions(
    model: torch.nn.Module,
    formatter: PromptFormatter,
    examples: Sequence[Example],
    pad_id: int,
    *,
    length_normalise: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """The highest-likelihood option of every example (each must have ``choices``); ties go to
    the first option."""
    choices: list[tuple[str, ...]] = []
    for ex in examples:
        if not ex.choices:
            raise ValueError(f"example {ex.id} has no choices")
        choices.append(ex.choices)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].prompt))
    predictions: list[str] = [""] * len(examples)
    for start in tqdm(range(0, len(order), batch_size), desc="options", disable=not progress):
        idx = order[start : start + batch_size]
        prompts = [formatter.prompt_ids(examples[i].prompt) for i in idx]
        options = [
            [[*formatter.answer_ids(c), *formatter.end_ids] for c in choices[i]] for i in idx
        ]
        for i, scores in zip(
            idx, batched_option_logprobs(model, prompts, options, pad_id), strict=True
        ):
            values = [logp / count if length_normalise else logp for logp, count in scores]
            predictions[i] = choices[i][max(range(len(values)), key=values.__getitem__)]
    return predictions

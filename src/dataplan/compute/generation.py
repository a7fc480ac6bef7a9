"""Greedy answers and their confidence: evaluation's answers and CoS-Low step 1 (arXiv 2512.24991).

For each prompt the model answers greedily (up to ``max_new_tokens``, stopping at an
end-of-turn / EOS token). With ``p_t`` the highest next-token probability at answer step t
(the greedy token's probability) over the T generated answer tokens (the stop token excluded,
as in the authors' code)::

    confidence = (1/T) Σ_t p_t
    perplexity = exp(−(1/T) Σ_t log p_t)

A generation that stops at once (T = 0) is scored on its stop token instead.

Prompts are generated in length-bucketed batches with left padding through
``transformers``' ``generate``; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from dataplan.compute.batching import length_sorted_batches, pad_batch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class GreedyAnswers:
    """Per-example results, each of length N, in input order."""

    confidence: np.ndarray  # (N,) mean max-token probability of the generated answer
    perplexity: np.ndarray  # (N,) perplexity of the generated answer
    n_tokens: np.ndarray  # (N,) generated answer tokens (stop token excluded)
    generated: list[str]  # (N,) the decoded answers

    def score(self, measure: str = "confidence") -> np.ndarray:
        """Higher = more confident: confidence as is, perplexity negated."""
        if measure == "confidence":
            return self.confidence
        if measure == "perplexity":
            return -self.perplexity
        raise ValueError(f"unknown confidence measure {measure!r}")


def stop_token_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """End-of-turn ids: the generation config's EOS id(s) and the tokenizer's EOS."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def max_log_prob(logits: torch.Tensor) -> torch.Tensor:
    """log of the highest softmax probability: max(z) − logsumexp(z), over the last dim."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return z.max(dim=-1).values - torch.logsumexp(z, dim=-1)


def answer_token_stats(
    max_logp: torch.Tensor, generated: torch.Tensor, stop_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence, perplexity and answer length from each step's highest log-probability.

    Args:
        max_logp: (B, S) log of the highest next-token probability at each of S steps
            (:func:`max_log_prob` of the step's logits).
        generated: (B, S) the generated token ids (padding after a row stops).
        stop_ids: token ids that end an answer.

    Returns:
        ``(confidence, perplexity, n_tokens)``, each (B,).
    """
    is_stop = torch.isin(generated, torch.as_tensor(list(stop_ids), device=generated.device))
    steps = torch.arange(generated.shape[1], device=generated.device)
    # Length before the first stop token (S when the row never stops).
    first_stop = torch.where(is_stop, steps, generated.shape[1]).min(dim=1).values  # (B,)
    answer_mask = steps[None, :] < first_stop[:, None]  # (B, S)
    empty = first_stop == 0
    # An immediate stop is scored on the stop token itself.
    answer_mask[empty, 0] = True
    count = answer_mask.sum(dim=1).clamp(min=1)
    mean_logp = (max_logp * answer_mask).sum(dim=1) / count
    confidence = (max_logp.exp() * answer_mask).sum(dim=1) / count
    return (
        confidence.double().cpu().numpy(),
        torch.exp(-mean_logp).double().cpu().numpy(),
        first_stop.cpu().numpy(),
    )


@torch.no_grad()
def greedy_answers(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 30,
    progress: bool = True,
    desc: str = "answers",
) -> GreedyAnswers:
    """Greedy answers and their confidence for every prompt (see module docstring).

    Args:
        model: a causal LM with ``generate`` (a peft model works too).
        tokenizer: its tokenizer (for the pad id and decoding).
        prompt_ids: the formatted prompts as token ids.
        batch_size: prompts generated together.
        max_new_tokens: the longest answer generated.
        progress: show a progress bar.
        desc: the progress bar's label.
    """
    n = len(prompt_ids)
    conf = np.zeros(n)
    ppl = np.zeros(n)
    n_tok = np.zeros(n, dtype=np.int64)
    texts = [""] * n
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    bar = tqdm(total=n, desc=desc, unit="ex", disable=not progress)
    for idx in length_sorted_batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = pad_batch([prompt_ids[i] for i in idx], pad_id, side="left")
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad_id,
            output_logits=True,
            return_dict_in_generate=True,
            # Sampling settings of the model's generation config do not apply to greedy decoding.
            temperature=None,
            top_p=None,
            top_k=None,
        )
        gen = out.sequences[:, ids.shape[1] :]  # (B, S)
        # One (B,) vector per step: never a (B, S, vocab) tensor.
        max_logp = torch.stack([max_log_prob(step) for step in out.logits], dim=1)  # (B, S)
        c, p, k = answer_token_stats(max_logp, gen, stops)
        for row, i in enumerate(idx):
            conf[i], ppl[i], n_tok[i] = c[row], p[row], k[row]
            # One sequence of ids decodes to one string.
            texts[i] = cast(str, tokenizer.decode(gen[row, : k[row]], skip_special_tokens=True))
        bar.update(len(idx))
    bar.close()
    return GreedyAnswers(confidence=conf, perplexity=ppl, n_tokens=n_tok, generated=texts)

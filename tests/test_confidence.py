"""Pool confidence: batched generation agrees with batch-of-one, and the statistics are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_llama
from dataplan.compute.generation import (
    answer_token_stats,
    greedy_answers,
    max_log_prob,
)
from dataplan.data.formatting import PromptFormatter
from dataplan.maths.confidence import lowest_confidence

PROMPTS = [
    "hello",
    "what is 2+2?",
    "a much longer prompt about the weather today",
    "x",
    "Name a colour",
    "ok?",
]


def test_batched_matches_batch_of_one_float64(char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64, seed=1)
    fmt = PromptFormatter(char_tokenizer)
    ids = [fmt.prompt_ids(p) for p in PROMPTS]
    batched = greedy_answers(
        model, char_tokenizer, ids, batch_size=4, max_new_tokens=8, progress=False
    )
    single = greedy_answers(
        model, char_tokenizer, ids, batch_size=1, max_new_tokens=8, progress=False
    )
    np.testing.assert_allclose(batched.confidence, single.confidence, rtol=1e-9)
    np.testing.assert_allclose(batched.perplexity, single.perplexity, rtol=1e-9)
    assert batched.generated == single.generated
    assert np.all((batched.confidence > 0) & (batched.confidence <= 1))
    # A random model rarely stops: answers run to max_new_tokens unless it emits the stop token.
    assert np.all(batched.n_tokens <= 8)


def test_answer_token_stats_by_hand():
    vocab = 5
    logits = torch.zeros(2, 3, vocab)
    logits[0, 0, 1] = 2.0  # p_max = e^2 / (e^2 + 4)
    logits[0, 1, 3] = 1.0
    logits[0, 2, 4] = 5.0  # stop step, excluded
    logits[1, 0, 4] = 3.0  # immediate stop: scored on the stop token
    generated = torch.tensor([[1, 3, 4], [4, 0, 0]])
    torch.testing.assert_close(max_log_prob(logits), torch.log_softmax(logits, -1).max(-1).values)
    conf, ppl, n = answer_token_stats(max_log_prob(logits), generated, stop_ids=[4])
    p1 = np.exp(2) / (np.exp(2) + 4)
    p2 = np.e / (np.e + 4)
    p_stop = np.exp(3) / (np.exp(3) + 4)
    assert conf[0] == pytest.approx((p1 + p2) / 2)
    assert ppl[0] == pytest.approx(np.exp(-(np.log(p1) + np.log(p2)) / 2))
    assert conf[1] == pytest.approx(p_stop)
    assert list(n) == [2, 0]


def test_lowest_confidence_decile_and_seeded_sample():
    scores = np.arange(400, dtype=float)[::-1]  # example 399 is the least confident
    low, chosen = lowest_confidence(scores, 0.1, k=32, seed=5)
    assert set(low) == set(range(360, 400))
    assert len(chosen) == 32 and set(chosen) <= set(low)
    _, again = lowest_confidence(scores, 0.1, k=32, seed=5)
    _, other = lowest_confidence(scores, 0.1, k=32, seed=6)
    assert list(again) == list(chosen) and list(other) != list(chosen)
    with pytest.raises(ValueError, match="fewer than the 32"):
        lowest_confidence(scores[:300], 0.1, k=32)

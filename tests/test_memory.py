"""Memory budgets (--max-memory): sizes, the saved-activation count, token-budget batches, and
Gram passes planned under a budget that agree with the reference whatever the plan."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_tiny_llama
from dataplan.compute.batching import length_sorted_batches
from dataplan.compute.gradients import (
    _hooked_modules,
    _per_token_bytes,
    _plan_gram_pass,
    gradient_gram,
    gradient_gram_reference,
    lora_pairs,
)
from dataplan.compute.memory import (
    parse_memory,
    plan_batches,
    saved_tensor_bytes,
    weight_bytes,
)
from dataplan.data.formatting import PromptFormatter
from dataplan.errors import ConfigError
from dataplan.models.lora import LoraSettings, attach_lora


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GB", 4 * 10**9), ("3.5GiB", int(3.5 * 2**30)), ("800MB", 800 * 10**6), ("1000", 1000)],
)
def test_parse_memory_reads_accelerate_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "4 parsecs", "0GB", "-1GB", ""])
def test_parse_memory_refuses_nonsense(text):
    with pytest.raises(ConfigError, match="--max-memory"):
        parse_memory(text)


def test_saved_tensor_bytes_counts_activations_not_weights():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16, requires_grad=True)
    with saved_tensor_bytes(layer) as saved:
        y = layer(x)  # saves x (the weight is the module's own)
        z = y.exp()  # saves its result
        z.sum()
        total = saved()
    assert total == x.numel() * 4 + z.numel() * 4
    assert weight_bytes(layer) == (16 * 8 + 8) * 4


def test_saved_tensor_bytes_grows_with_sequence_length(char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer))
    per = []
    for t in (8, 32):
        ids = torch.randint(3, len(char_tokenizer), (1, t))
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with saved_tensor_bytes(model) as saved:
            model(inputs_embeds=emb).logits.sum()
            per.append(saved() / t)
    assert per[0] > 0
    assert per[1] >= per[0] * 0.99  # per-token cost never shrinks with length


@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=40),
    batch_size=st.integers(1, 10),
    max_tokens=st.one_of(st.none(), st.integers(1, 200)),
)
def test_token_budget_batches_cover_every_index_once_within_budget(lengths, batch_size, max_tokens):
    batches = list(length_sorted_batches(lengths, batch_size, max_tokens))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= batch_size
        if max_tokens is not None and len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= max_tokens
    if max_tokens is None:  # unchanged from plain batching: fixed-size chunks of the sort
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        assert flat == order
        assert all(len(b) == batch_size for b in batches[:-1])


def test_plan_batches_fits_or_says_what_is_needed():
    plan = plan_batches(10_000, weights=2_000, stored=1_000, per_token=10, longest=50)
    assert plan.max_tokens == 700
    with pytest.raises(ConfigError, match="at least"):
        plan_batches(3_400, weights=2_000, stored=1_000, per_token=10, longest=50)


PROMPTS = [
    ("2+2=", "4"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Is it raining?", "no"),
    ("Name a prime number larger than ten", "eleven"),
    ("x", "a long answer with several tokens"),
    ("Translate: chat", "cat"),
]


def _setup(tokenizer):
    model = make_tiny_llama(len(tokenizer), dtype=torch.float64)
    peft_model = attach_lora(model, LoraSettings(r=4, alpha=8, seed=3))
    fmt = PromptFormatter(tokenizer, use_chat_template=True)
    return peft_model, [fmt.encode(p, a) for p, a in PROMPTS]


def _plan(model, encoded, pad_id, budget, batch_size=8):
    from dataplan.compute.gradients import _frozen_forward

    modules = _hooked_modules(lora_pairs(model), frozen=True)
    lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in encoded]
    longest = max(range(len(encoded)), key=lambda i: lengths[i])
    per_token = _per_token_bytes(
        model,
        encoded[longest],
        pad_id,
        torch.device("cpu"),
        lambda: _frozen_forward(model),
        modules,
    )
    return modules, _plan_gram_pass(
        model, modules, len(encoded), lengths[longest], per_token, batch_size, budget, 2**40
    )


def test_gram_under_any_budget_matches_reference(char_tokenizer):
    model, enc = _setup(char_tokenizer)
    pad = char_tokenizer.pad_token_id
    ref = gradient_gram_reference(model, enc)
    _, (direct, groups, roomy) = _plan(model, enc, pad, 10**10)
    assert direct and len(groups) == 1

    # the tightest budget that runs (bisection): one longest example per batch, one layer
    # per pass over the data
    def runs(budget):
        try:
            _plan(model, enc, pad, budget)
        except ConfigError:
            return False
        return True

    lo, hi = weight_bytes(model), weight_bytes(model) + 10**9
    assert runs(hi) and not runs(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    tight_budget = hi
    _, (direct, groups, plan) = _plan(model, enc, pad, tight_budget)
    assert not direct and len(groups) > 1 and plan.max_tokens < roomy.max_tokens
    with pytest.raises(ConfigError, match="--max-memory"):
        gradient_gram(model, enc, pad, max_memory=tight_budget - 1, progress=False)
    for budget in (10**10, tight_budget, tight_budget + 200_000):
        fast = gradient_gram(model, enc, pad, max_memory=budget, progress=False)
        torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-12)


def test_budgeted_gradient_stats_and_losses_equal_fixed_batches(char_tokenizer, caplog):
    import logging

    import numpy as np

    from dataplan.compute.example_stats import answer_losses, gradient_stats
    from test_example_stats import ADAPTERS, _encoded, _ensemble

    model = _ensemble(char_tokenizer)
    enc = _encoded(char_tokenizer)
    pad = char_tokenizer.pad_token_id
    groups = {"late": ["default", "m2"]}
    fixed = gradient_stats(model, enc, pad, ADAPTERS, sum_groups=groups, batch_size=8)
    losses = answer_losses(model, enc, pad, batch_size=8)
    tight = weight_bytes(model) + 2_000_000
    caplog.set_level(logging.INFO, logger="dataplan.compute.example_stats")
    budgeted = gradient_stats(
        model, enc, pad, ADAPTERS, sum_groups=groups, batch_size=8, max_memory=tight
    )
    plans = [r.getMessage() for r in caplog.records if "pass:" in r.getMessage()]
    import re

    longest = max(len(e.prompt_ids) + len(e.answer_ids) for e in enc)
    max_tokens = int(re.search(r"≤ (\d+) tokens", plans[0]).group(1))
    assert longest <= max_tokens < 8 * longest  # the budget, not the batch size, decides
    for a in ADAPTERS:
        np.testing.assert_allclose(budgeted.sq_norms[a], fixed.sq_norms[a], rtol=1e-9)
    np.testing.assert_allclose(budgeted.sq_norm_of_sum["late"], fixed.sq_norm_of_sum["late"])
    np.testing.assert_allclose(
        answer_losses(model, enc, pad, batch_size=8, max_memory=tight), losses, rtol=1e-10
    )
    with pytest.raises(ConfigError, match="--max-memory"):
        answer_losses(model, enc, pad, max_memory=weight_bytes(model))


def test_coslow_cli_takes_a_memory_budget(tiny_model_dir, tmp_path, capsys):
    import json

    from test_cli import _labelled_file, run_main

    data = _labelled_file(tmp_path / "l.jsonl")
    base = ["coslow", "--model", str(tiny_model_dir), "--labeled", str(data), "--lora-r", "4"]
    code, out, _ = run_main([*base, "--json"], capsys)
    assert code == 0
    code, budgeted, _ = run_main([*base, "--max-memory", "1GB", "--json"], capsys)
    assert code == 0
    assert json.loads(budgeted)["coslow"] == pytest.approx(json.loads(out)["coslow"], rel=1e-6)
    code, _, err = run_main([*base, "--max-memory", "plenty"], capsys)
    assert code == 2 and "--max-memory" in err
    code, _, err = run_main([*base, "--max-memory", "1kB"], capsys)
    assert code == 2 and "too small" in err

"""The evaluation core's fast paths: a merged LoRA adapter (base weights restored bit for bit) and
options scored only where a metric reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.evaluation import EvalSettings, evaluate
from dataplan.models.lora import LoraSettings, attach_lora, merged_for_evaluation

WORDS = ("red", "blue", "green", "cat")


def _adapted(tiny_llama):
    model = attach_lora(tiny_llama, LoraSettings(r=4, alpha=8.0, seed=0))
    with torch.no_grad():  # a trained-looking adapter: B ≠ 0
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _examples(n: int = 12) -> list[Example]:
    rng = np.random.default_rng(0)
    return [
        Example(
            id=f"e{i}",
            prompt=f"Say {' '.join(rng.choice(WORDS, size=1 + i % 3))}",
            answer=WORDS[i % 4],
            choices=WORDS,
        )
        for i in range(n)
    ]


def test_merging_changes_nothing_but_speed_and_restores_the_weights(tiny_llama):
    model = _adapted(tiny_llama)
    ids = torch.randint(3, 40, (3, 9), generator=torch.Generator().manual_seed(2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with merged_for_evaluation(model):
            merged = model(input_ids=ids).logits
            assert any(
                not torch.equal(p, before[n])
                for n, p in model.named_parameters()
                if "lora" not in n
            ), "nothing was merged"
        after = model(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} not restored bit for bit"
    assert torch.equal(after, unmerged)
    # The restored model trains on: the adapter is active again (not left merged).
    assert not any(getattr(m, "merged", False) for m in model.modules())


def test_merging_a_model_without_lora_is_a_no_op(tiny_llama):
    with merged_for_evaluation(tiny_llama) as m:
        assert m is tiny_llama


def test_evaluation_merged_equals_the_unmerged_reference(tiny_llama, char_tokenizer):
    model = _adapted(tiny_llama)
    formatter = PromptFormatter(char_tokenizer, use_chat_template=False)
    test = _examples()
    fast = evaluate(model, formatter, test, EvalSettings(max_new_tokens=3))
    from dataplan.evaluation import core

    slow = core._evaluate(model, formatter, test, EvalSettings(max_new_tokens=3), False)
    assert fast["examples"] == slow["examples"]
    for key in ("exact_match", "token_f1", "loglik_accuracy", "loglik_majority_share"):
        assert fast[key] == pytest.approx(slow[key]), key
    assert fast["loglik_accuracy"] is not None


def test_options_are_skipped_when_no_metric_reads_them(tiny_llama, char_tokenizer):
    formatter = PromptFormatter(char_tokenizer, use_chat_template=False)
    out = evaluate(
        tiny_llama, formatter, _examples(4), EvalSettings(max_new_tokens=2, options=False)
    )
    assert out["loglik_accuracy"] is None and "loglik_majority_share" not in out


@pytest.mark.parametrize(
    ("task", "options"),
    [("arithmetic_2_digit_addition", False), ("intent_recognition", True), (None, True)],
)
def test_a_curve_scores_options_unless_its_headline_never_reads_them(tmp_path, task, options):
    from dataplan.workflows.curve import CurveConfig

    data = None
    if task is None:
        data = str(tmp_path / "d.jsonl")
        (tmp_path / "d.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')
    cfg = CurveConfig(task=task, data=data, budgets=(0, 4), seeds=(0,))
    assert cfg.evaluation.options is options

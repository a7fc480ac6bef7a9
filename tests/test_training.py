"""The training core: weighted losses against a float64 loop, weights of 1 and 0, refreshes,
checkpoints, and a clean model after a failure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_llama
from dataplan.data.formatting import PromptFormatter, encode_examples
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.training import OBJECTIVES, Refresh, TrainSettings, WeightTable, get_objective, train
from dataplan.training.losses import token_losses, weighted_loss
from dataplan.training.objectives.sft import Collator, EncodedDataset
from dataplan.training.weighting import WEIGHTINGS, get_weighting

WORDS = ["red", "blue", "green", "cat"]


def _examples(n: int) -> list[Example]:
    # Answers of different lengths, so token- and example-level means differ.
    return [
        Example(id=str(i), prompt=f"Colour {i}?", answer=WORDS[i % 4] * (1 + i % 3))
        for i in range(n)
    ]


def test_answer_only_logits_give_the_full_logits_loss_and_gradient(char_tokenizer):
    """The SFT loss computes logits only where a label is predicted: same losses and gradients
    as the loss on every position's logits (float64)."""
    from dataplan.models.lora import LoraSettings, attach_lora
    from dataplan.training.objectives.sft import answer_token_losses

    model = attach_lora(make_tiny_llama(len(char_tokenizer)), LoraSettings(r=4)).double()
    fmt = PromptFormatter(char_tokenizer)
    examples = [  # prompts of different lengths: labels at different positions per row
        Example(
            id=str(i), prompt="Colour " + "x" * (3 * i) + "?", answer=WORDS[i % 4] * (1 + i % 3)
        )
        for i in range(4)
    ]
    data = EncodedDataset(encode_examples(fmt, examples))
    batch = Collator(char_tokenizer.pad_token_id)([data[i] for i in range(4)])
    labels = batch.pop("labels")
    batch.pop("example_index")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    trainable = [p for p in model.parameters() if p.requires_grad]

    def mean_and_grads(fast: bool):
        model.zero_grad()
        if fast:
            losses, mask, out = answer_token_losses(model, inputs, labels)
            assert out.logits.shape[1] < labels.shape[1] - 1  # prompt positions were skipped
        else:
            losses, mask = token_losses(model(**inputs).logits, labels)
        loss = losses.sum() / mask.sum()
        # A non-zero B so that every adapter matrix gets a gradient.
        loss.backward()
        return float(loss), [p.grad.clone() for p in trainable]

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    fast, g_fast = mean_and_grads(True)
    slow, g_slow = mean_and_grads(False)
    assert fast == pytest.approx(slow, rel=1e-12)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_weighted_loss_matches_a_float64_loop():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 6), generator=gen)
    labels[0, :2] = -100
    labels[1, :4] = -100
    labels[2, :1] = -100
    weights = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    losses, mask = token_losses(logits, labels)
    per_token = {}
    for i in range(3):
        for s in range(5):
            if labels[i, s + 1] != -100:
                logp = torch.log_softmax(logits[i, s], -1)[labels[i, s + 1]]
                per_token.setdefault(i, []).append(-float(logp))
    tokens = sum(float(w) * sum(per_token[i]) for i, w in enumerate(weights)) / sum(
        float(w) * len(per_token[i]) for i, w in enumerate(weights)
    )
    examples = sum(float(w) * np.mean(per_token[i]) for i, w in enumerate(weights)) / float(
        weights.sum()
    )
    assert float(weighted_loss(losses, mask, weights, "tokens")) == pytest.approx(tokens, rel=1e-12)
    assert float(weighted_loss(losses, mask, weights, "examples")) == pytest.approx(
        examples, rel=1e-12
    )
    zero = weighted_loss(losses, mask, torch.zeros(3, dtype=torch.float64))
    assert float(zero) == 0.0 and not torch.isnan(zero)
    with pytest.raises(ValueError, match="unknown reduction"):
        weighted_loss(losses, mask, weights, "sum")


def _loss_and_grads(model, trainer, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    value = float(loss.detach())
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return value, grads


def _trainer(tmp_path, model, fmt, examples, weights, reduction="tokens"):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    table = None if weights is None else WeightTable(np.asarray(weights, dtype=np.float64))
    return get_objective("sft", reduction=reduction).build_trainer(
        model, examples, fmt, args, table, []
    )


@pytest.mark.parametrize("reduction", ["tokens", "examples"])
def test_unit_weights_give_the_unweighted_loss_and_gradients(char_tokenizer, tmp_path, reduction):
    from dataplan.models.lora import LoraSettings, attach_lora

    fmt = PromptFormatter(char_tokenizer)
    examples = _examples(4)
    model = attach_lora(
        make_tiny_llama(len(char_tokenizer), dtype=torch.float64), LoraSettings(r=4)
    )
    # B = 0 in a fresh adapter: give it values so that every LoRA parameter has a gradient.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    model.train()
    batch = Collator(char_tokenizer.pad_token_id)(
        [EncodedDataset(encode_examples(fmt, examples))[i] for i in range(4)]
    )
    plain = _trainer(tmp_path, model, fmt, examples, None)
    ones = _trainer(tmp_path, model, fmt, examples, np.ones(4), reduction)
    loss0, grads0 = _loss_and_grads(model, plain, batch)
    loss1, grads1 = _loss_and_grads(model, ones, batch)
    if reduction == "tokens":
        # Reference: the plain float64 mean cross-entropy over the batch's labelled tokens.
        def reference(b):
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            return torch.nn.functional.cross_entropy(
                out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                b["labels"][:, 1:].reshape(-1),
                ignore_index=-100,
            )

        class Plain:
            compute_loss = staticmethod(lambda m, b: reference(b))

        loss_ref, grads_ref = _loss_and_grads(model, Plain, batch)
        assert loss1 == pytest.approx(loss_ref, rel=1e-12)
        assert grads_ref.keys() == grads1.keys() and len(grads_ref) > 0
        for name, g in grads_ref.items():
            torch.testing.assert_close(grads1[name], g, rtol=1e-10, atol=1e-14)
        # The Trainer's own (unweighted) loss is the same mean, with logits upcast to float32
        # even in a float64 model: equal to float32 rounding.
        assert loss0 == pytest.approx(loss_ref, rel=1e-6)
        for name, g in grads_ref.items():
            scale = float(g.abs().max())
            torch.testing.assert_close(grads0[name], g, rtol=1e-4, atol=1e-6 * scale)
    else:  # the mean of per-example means differs when the answers' lengths differ
        assert loss1 != pytest.approx(loss0, rel=1e-6)


@pytest.mark.parametrize("reduction", ["tokens", "examples"])
def test_zero_weight_equals_leaving_the_example_out(char_tokenizer, tmp_path, reduction):
    from dataplan.models.lora import LoraSettings, attach_lora

    fmt = PromptFormatter(char_tokenizer)
    examples = _examples(3)
    model = attach_lora(
        make_tiny_llama(len(char_tokenizer), dtype=torch.float64), LoraSettings(r=4)
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    model.train()
    items = EncodedDataset(encode_examples(fmt, examples))
    collate = Collator(char_tokenizer.pad_token_id)
    weighted = _trainer(tmp_path, model, fmt, examples, [1.0, 0.0, 2.5], reduction)
    loss_w, grads_w = _loss_and_grads(model, weighted, collate([items[0], items[1], items[2]]))
    kept = [examples[0], examples[2]]
    without = _trainer(tmp_path, model, fmt, kept, [1.0, 2.5], reduction)
    kept_items = EncodedDataset(encode_examples(fmt, kept))
    loss_k, grads_k = _loss_and_grads(model, without, collate([kept_items[0], kept_items[1]]))
    assert loss_w == pytest.approx(loss_k, rel=1e-12)
    for name, g in grads_k.items():
        torch.testing.assert_close(grads_w[name], g, rtol=1e-10, atol=1e-14)


def test_refresh_runs_at_the_right_steps_and_is_recorded(char_tokenizer, tiny_llama):
    fmt = PromptFormatter(char_tokenizer)
    examples = _examples(6)
    calls: list[int] = []

    def fn(model, step):
        calls.append(step)
        assert not model.training  # scored in eval mode
        return np.full(6, 1.0 + step)

    settings = TrainSettings(batch_size=2, min_steps=10, max_steps=10, lora_r=2)
    result = train(tiny_llama, examples, fmt, settings, refresh=Refresh(fn, every=3))
    assert calls == [0, 3, 6, 9]  # before training (no initial weights given), then every 3
    assert [step for step, _ in result.weights] == [0, 3, 6, 9]
    np.testing.assert_array_equal(result.weights[-1][1], np.full(6, 10.0))
    assert result.steps == 10 and result.seconds > 0
    result.model.unload()
    calls.clear()
    result = train(tiny_llama, examples, fmt, settings, weights=np.ones(6), refresh=Refresh(fn, 4))
    assert calls == [4, 8]
    result.model.unload()


def test_weights_are_checked(char_tokenizer, tiny_llama):
    fmt = PromptFormatter(char_tokenizer)
    settings = TrainSettings(min_steps=1, max_steps=1, lora_r=2)
    for bad, match in (
        (np.ones(3), "one weight per example"),
        (np.array([1.0, -1.0, 1.0, 1.0]), "non-negative"),
        (np.array([1.0, np.nan, 1.0, 1.0]), "finite"),
        (np.zeros(4), "every weight is 0"),
    ):
        with pytest.raises(ConfigError, match=match):
            train(tiny_llama, _examples(4), fmt, settings, weights=bad)
        # the caller's model comes back without an adapter
        assert not any("lora" in n for n, _ in tiny_llama.named_parameters())
    with pytest.raises(ConfigError):
        Refresh(lambda m, s: None, every=0)


def test_checkpoints_are_saved_and_a_failure_leaves_the_model_clean(
    char_tokenizer, tiny_llama, tmp_path
):
    fmt = PromptFormatter(char_tokenizer)
    settings = TrainSettings(batch_size=2, min_steps=4, max_steps=4, lora_r=2)
    dirs = {0: tmp_path / "step-0", 2: tmp_path / "step-2"}
    result = train(
        tiny_llama, _examples(4), fmt, settings, checkpoints=dirs, save_to=tmp_path / "final"
    )
    for d in (*dirs.values(), tmp_path / "final"):
        assert (d / "adapter_model.safetensors").exists()
    assert result.adapter_path == tmp_path / "final"
    result.model.unload()

    class Boom(Exception):
        pass

    def fail(*a, **k):
        raise Boom

    with pytest.raises(Boom):
        train(tiny_llama, _examples(4), fmt, settings, refresh=Refresh(fail, every=1))
    assert not any("lora" in n for n, _ in tiny_llama.named_parameters())


def test_train_settings_refuse_what_the_optimiser_would_crash_on():
    for bad in (
        {"learning_rate": float("nan")},
        {"epochs": float("inf")},
        {"weight_decay": -0.1},
        {"lora_targets": ","},
        {"warmup_ratio": 1.0},
    ):
        with pytest.raises(ConfigError):
            TrainSettings(**bad)


def test_registries():
    assert "sft" in OBJECTIVES and "uniform" in WEIGHTINGS
    with pytest.raises(ConfigError, match="unknown objective"):
        get_objective("ppo")
    with pytest.raises(ConfigError, match="unknown loss reduction"):
        get_objective("sft", reduction="sum")
    with pytest.raises(ConfigError, match="unknown weighting"):
        get_weighting("softmax")
    assert get_weighting("uniform").initial(None, [], None) is None


def test_a_crashed_run_resumes_to_the_same_adapter(char_tokenizer, tmp_path):
    """Killed at step 5 of 8 (checkpoints every 2 steps, weights refreshed every 3), the rerun
    resumes from step 4 with the weights in force then and ends with the uninterrupted adapter."""
    from transformers import TrainerCallback

    fmt = PromptFormatter(char_tokenizer)
    examples = _examples(6)
    settings = TrainSettings(batch_size=2, min_steps=8, max_steps=8, lora_r=2, learning_rate=5e-3)
    refreshed: list[int] = []

    def fn(model, step):
        refreshed.append(step)
        with torch.no_grad():  # weights that depend on the current parameters
            b = sum(float(p.abs().sum()) for n, p in model.named_parameters() if "lora_B" in n)
        return np.linspace(0.2, 1.0, 6) * (1.0 + b)

    def run(state=None, crash_at=None):
        class Crash(TrainerCallback):
            def on_step_end(self, args, state_, control, **kw):
                if state_.global_step == crash_at:
                    raise KeyboardInterrupt

        model = make_tiny_llama(len(char_tokenizer))
        result = train(
            model,
            examples,
            fmt,
            settings,
            refresh=Refresh(fn, every=3),
            state_dir=state,
            save_every=2,
            callbacks=[Crash()] if crash_at else [],
        )
        return {
            n: p.detach().clone() for n, p in result.model.named_parameters() if "lora" in n
        }, result

    reference, ref_result = run()
    assert refreshed == [0, 3, 6]
    refreshed.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "state", crash_at=5)
    assert refreshed == [0, 3] and (tmp_path / "state" / "checkpoint-4").is_dir()
    refreshed.clear()
    resumed, result = run(tmp_path / "state")
    assert refreshed == [6]  # steps 0 and 3 were not recomputed: their weights were saved
    assert [s for s, _ in result.weights] == [0, 3, 6]
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.weights[-1][1], ref_result.weights[-1][1], rtol=1e-5)
    # The mean loss of the whole run, not of the steps after the resume (the Trainer's).
    assert [s for s, _ in result.loss_curve] == list(range(1, 9))
    assert result.train_loss == pytest.approx(ref_result.train_loss, rel=1e-4)


def test_per_batch_normalisation_rescales_within_each_batch():
    pool = np.array([0.2, 0.4, 0.6, 1.0, 0.5])
    table = WeightTable(pool.copy(), per_batch_floor=0.1)
    np.testing.assert_allclose(table.for_batch(torch.tensor([0, 1])).numpy(), [0.1, 1.0])
    np.testing.assert_allclose(
        table.for_batch(torch.tensor([1, 2, 3])).numpy(), [0.1, 0.1 + 0.9 / 3, 1.0]
    )
    # min-max is affine-invariant: batch weights from pool weights = from raw scores
    scores = 3.0 * pool - 7.0
    from dataplan.maths.weights import minmax_weights

    np.testing.assert_allclose(
        table.for_batch(torch.tensor([4, 0, 3])).numpy(), minmax_weights(scores[[4, 0, 3]], 0.1)
    )
    assert table.for_batch(torch.tensor([2])).tolist() == [1.0]  # all equal: uniform
    assert WeightTable(pool.copy()).for_batch(torch.tensor([0, 1])).tolist() == [0.2, 0.4]

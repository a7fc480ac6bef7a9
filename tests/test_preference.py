"""DPO and SimPO through TRL with per-example weights: TRL's own loss is the reference.

With weights of 1 the weighted trainers give TRL's loss and gradient exactly; with other weights
the gradient is Σ wᵢ ∇ℓᵢ / Σ wᵢ, where ℓᵢ is TRL's loss of a batch holding pair i alone.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_llama
from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import PreferenceExample
from dataplan.training import TrainSettings, WeightTable, get_objective, train
from dataplan.training.core import trainer_arguments
from dataplan.training.objectives.preference import batch_scale, encode_pairs, scale_row_grad
from test_cli import run_main
from test_weigh import _write

WEIGHTS = [0.2, 1.0, 3.0, 0.0]


def _pairs(n: int = 4) -> list[PreferenceExample]:
    return [
        PreferenceExample(
            id=str(i), prompt=f"Colour {i}?", chosen="red" * (1 + i % 2), rejected=f"blue{i}"
        )
        for i in range(n)
    ]


def _trainer(objective, tmp_path, char_tokenizer, weights):
    """A TRL trainer of the objective on a tiny float64 model with a LoRA adapter (B ≠ 0, so that
    every adapter parameter has a gradient)."""
    from dataplan.models.lora import attach_lora

    settings = TrainSettings(batch_size=4, lora_r=2)
    model = attach_lora(make_tiny_llama(len(char_tokenizer), dtype=torch.float64), settings.lora(0))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    args = trainer_arguments(settings, 2, 4, str(tmp_path), seed=0)
    table = None if weights is None else WeightTable(np.asarray(weights, dtype=np.float64))
    trainer = get_objective(objective).build_trainer(
        model, _pairs(), PromptFormatter(char_tokenizer), args, table, []
    )
    trainer.model.train()
    return trainer


def _loss_and_grads(trainer, rows):
    trainer.model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    batch = {
        k: v.to(trainer.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()
    }
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    loss = loss.detach()
    grads = {
        n: p.grad.detach().double().clone()
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and ".default." in n
    }
    return float(loss), grads


@pytest.mark.parametrize("objective", ["dpo", "simpo"])
def test_weights_of_one_are_trl_own_loss(objective, tmp_path, char_tokenizer):
    plain = _loss_and_grads(_trainer(objective, tmp_path, char_tokenizer, None), range(4))
    ones = _loss_and_grads(_trainer(objective, tmp_path, char_tokenizer, [1.0] * 4), range(4))
    assert ones[0] == pytest.approx(plain[0], rel=1e-6)
    assert plain[1].keys() == ones[1].keys() and plain[1]
    for name, g in plain[1].items():
        torch.testing.assert_close(ones[1][name], g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("objective", ["dpo", "simpo"])
def test_weighted_gradient_is_the_weighted_mean_of_trl_pair_losses(
    objective, tmp_path, char_tokenizer
):
    weighted = _loss_and_grads(_trainer(objective, tmp_path, char_tokenizer, WEIGHTS), range(4))
    plain = _trainer(objective, tmp_path, char_tokenizer, None)
    singles = [_loss_and_grads(plain, [i]) for i in range(4)]  # TRL's loss of pair i alone
    total = sum(WEIGHTS)
    for name, g in weighted[1].items():
        expected = sum(w * s[1][name] for w, s in zip(WEIGHTS, singles, strict=True)) / total
        # TRL's fused LM head computes DPO's log-probabilities in float32 even for a float64
        # model, so the per-row gradients carry float32 rounding: compare by relative norm.
        assert float((g - expected).norm() / expected.norm()) < 1e-5, name
    assert any(float(g.abs().max()) > 0 for g in weighted[1].values())
    mean_of_singles = sum(w * s[0] for w, s in zip(WEIGHTS, singles, strict=True)) / total
    if objective == "simpo":  # the value too: Σ wᵢℓᵢ / Σ wᵢ
        assert weighted[0] == pytest.approx(mean_of_singles, rel=1e-5)
    else:  # DPO logs TRL's unweighted mean (only the gradient is weighted)
        assert weighted[0] == pytest.approx(np.mean([s[0] for s in singles]), rel=1e-5)


def test_scale_row_grad_and_batch_scale():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.0, 1.0, 2.0, 0.5], dtype=torch.float64)
    y = scale_row_grad(x, scale)
    assert torch.equal(y, x)
    (y**2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach() * scale[:, None])
    table = WeightTable(np.array([1.0, 3.0, 0.0, 2.0]))
    c = batch_scale(table, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(c, torch.tensor([0.75, 2.25, 0.0], dtype=torch.float64))
    assert float(c.mean()) == pytest.approx(1.0)
    assert torch.equal(batch_scale(table, torch.tensor([2])), torch.zeros(1, dtype=torch.float64))


def test_pairs_use_dataplan_tokens(char_tokenizer):
    fmt = PromptFormatter(char_tokenizer)
    (pair,) = encode_pairs(fmt, _pairs(1))
    chosen = fmt.encode("Colour 0?", "red")
    assert pair.prompt_ids == list(chosen.prompt_ids)
    assert pair.chosen_ids == [*chosen.answer_ids, *chosen.end_ids]
    assert pair.rejected_ids[-1] == char_tokenizer.eos_token_id


@pytest.mark.parametrize("objective", ["dpo", "simpo"])
def test_training_leaves_one_adapter_and_a_clean_model(objective, tmp_path, char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = TrainSettings(batch_size=2, min_steps=2, max_steps=2, lora_r=2)
    result = train(
        model,
        _pairs(),
        PromptFormatter(char_tokenizer),
        settings,
        objective=objective,
        weights=WEIGHTS,
        save_to=tmp_path / "adapter",
    )
    assert list(result.model.peft_config) == ["default"]  # TRL's "ref" copy is gone
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    result.model.unload()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # the frozen model is untouched
    ids = torch.tensor([[1, 10, 11]])
    assert model(ids).logits.shape == (1, 3, len(char_tokenizer))  # a plain forward still works


def _pair_files(tmp_path, n=8, n_holdout=3):
    data = _write(
        tmp_path / "pairs.jsonl",
        [
            {"id": f"p{i}", "prompt": f"Colour {i}?", "chosen": "red", "rejected": f"no{i}"}
            for i in range(n)
        ],
    )
    holdout = _write(
        tmp_path / "hold.jsonl",
        [
            {"id": f"h{i}", "prompt": f"Shade {i}?", "chosen": "red", "rejected": "x"}
            for i in range(n_holdout)
        ],
    )
    return data, holdout


def _train_args(tiny_model_dir, tmp_path, data, *extra):
    return [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "adapter"),
        "--min-steps",
        "2",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--json",
        *extra,
    ]


@pytest.mark.parametrize("weighting", ["uniform", "ica", "rho", "one-shot", "filter"])
@pytest.mark.parametrize("objective", ["dpo", "simpo"])
def test_train_preference_objectives(tiny_model_dir, tmp_path, capsys, objective, weighting):
    """Every weighting trains with both preference objectives into a loadable adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataplan.io import read_parquet

    data, holdout = _pair_files(tmp_path)
    args = _train_args(tiny_model_dir, tmp_path, data, "--objective", objective)
    if weighting != "uniform":
        args += ["--weighting", weighting, "--holdout", str(holdout), "--k", "2"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["objective"] == objective and summary["steps"] == 2
    assert summary["weighting"] == weighting
    if weighting == "uniform":
        assert summary["weights"] == []  # the unweighted loss
    else:
        (first,) = summary["weights"]
        assert first["step"] == 0 and 0 < first["mean"] <= 1
        weights = np.asarray(
            read_parquet(tmp_path / "adapter-run" / "weights.parquet")["weight_step0"]
        )
        if weighting == "filter":  # the top 75% kept at weight 1, the rest dropped
            assert set(weights.tolist()) == {0.0, 1.0}
            assert weights.sum() == math.ceil(0.75 * len(weights))
        else:  # scores min-max normalised over the pool
            assert weights.min() == 0.0 and weights.max() == 1.0
    config = json.loads((tmp_path / "adapter-run" / "config.json").read_text())
    assert config["objective_settings"]["beta"] == (0.1 if objective == "dpo" else 2.0)
    PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "adapter")
    )


@pytest.mark.parametrize(
    ("objective", "files", "fragment"),
    [
        ("dpo", "sft", 'train.jsonl:1: field "chosen": missing field: --objective dpo trains'),
        ("simpo", "no-rejected", 'pairs.jsonl:1: field "rejected": missing field'),
        ("dpo", "same", "the chosen and rejected responses are the same"),
        ("dpo", "bad-holdout", 'hold.jsonl:1: field "chosen": missing field'),
        ("sft", "pairs", 'pairs.jsonl:1: field "answer"'),
    ],
)
def test_train_preference_bad_input_exit_2(
    tiny_model_dir, tmp_path, capsys, objective, files, fragment
):
    from test_weigh import _files

    data, holdout = _pair_files(tmp_path)
    if files == "sft":
        data, _ = _files(tmp_path)
    elif files == "no-rejected":
        data = _write(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b"}])
    elif files == "same":
        data = _write(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "b"}])
    elif files == "bad-holdout":
        holdout = _write(tmp_path / "hold.jsonl", [{"prompt": "a", "answer": "b"}])
    args = _train_args(tiny_model_dir, tmp_path, data, "--objective", objective)
    args += ["--weighting", "ica", "--holdout", str(holdout), "--k", "1"]
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == "" and fragment in err, err
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "adapter-run").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--objective", "ppo"], "unknown --objective 'ppo'; choose from sft, dpo, simpo"),
        (["--objective", "dpo", "--beta", "0"], "--beta must be positive"),
        (["--beta", "0.1"], "--beta belongs to --objective dpo or simpo"),
        (["--objective", "simpo", "--task", "x"], "give --data FILE"),
    ],
)
def test_train_objective_options_exit_2(tiny_model_dir, tmp_path, capsys, extra, fragment):
    data, _ = _pair_files(tmp_path)
    args = _train_args(tiny_model_dir, tmp_path, data, *extra)
    if "--task" in extra:
        args.remove("--data")
        args.remove(str(data))
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == "" and fragment in err, err


@pytest.mark.parametrize("objective", ["dpo", "simpo"])
def test_preference_ica_refresh_rescores_from_the_current_parameters(
    tiny_model_dir, tmp_path, capsys, objective
):
    """--refresh 2 with a preference objective: weights before training and again halfway, from
    the parameters TRL's trainer has moved by then."""
    from dataplan.io import read_parquet

    data, holdout = _pair_files(tmp_path)
    args = _train_args(tiny_model_dir, tmp_path, data, "--objective", objective)
    args += ["--weighting", "ica", "--holdout", str(holdout), "--k", "2", "--refresh", "2"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    assert [w["step"] for w in json.loads(out)["weights"]] == [0, 1]
    table = read_parquet(tmp_path / "adapter-run" / "weights.parquet")
    first, second = np.asarray(table["weight_step0"]), np.asarray(table["weight_step1"])
    assert second.min() == 0.0 and second.max() == 1.0
    assert not np.array_equal(first, second)

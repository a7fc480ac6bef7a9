"""Fast per-example LoRA gradient Gram vs the slow one-example-at-a-time reference (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_llama
from dataplan.compute.gradients import (
    answer_only_batch,
    gradient_gram,
    gradient_gram_reference,
    lora_pairs,
)
from dataplan.data.formatting import PromptFormatter
from dataplan.maths.similarity import cos_similarity_score, cosine_from_gram, median_pairwise
from dataplan.models.lora import LoraSettings, attach_lora

PROMPTS = [
    ("2+2=", "4"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Is it raining?", "no"),
    ("Name a prime number larger than ten", "eleven"),
    ("x", "a long answer with several tokens"),
    ("Translate: chat", "cat"),
    ("Spell dog backwards", "god"),
]


def _encoded(tokenizer, chat=True):
    fmt = PromptFormatter(tokenizer, use_chat_template=chat)
    return [fmt.encode(p, a) for p, a in PROMPTS]


def _peft(tokenizer, *, nonzero_b: bool, targets="all-linear"):
    model = make_tiny_llama(len(tokenizer), dtype=torch.float64)
    peft_model = attach_lora(model, LoraSettings(r=4, alpha=8, target_modules=targets, seed=3))
    if nonzero_b:
        gen = torch.Generator().manual_seed(7)
        for pair in lora_pairs(peft_model):
            with torch.no_grad():
                pair.lora_b.weight.copy_(
                    torch.randn(pair.lora_b.weight.shape, generator=gen, dtype=torch.float64) * 0.1
                )
    return peft_model


@pytest.mark.parametrize("nonzero_b", [False, True], ids=["fresh-adapter", "trained-adapter"])
@pytest.mark.parametrize(
    ("batch_size", "budget"),
    [(64, 2**30), (3, 2**30), (2, 1)],
    ids=["one-batch-direct", "several-batches-buffered", "one-layer-per-pass"],
)
def test_fast_gram_matches_reference_float64(char_tokenizer, nonzero_b, batch_size, budget):
    model = _peft(char_tokenizer, nonzero_b=nonzero_b)
    enc = _encoded(char_tokenizer)
    ref = gradient_gram_reference(model, enc)
    fast = gradient_gram(
        model,
        enc,
        char_tokenizer.pad_token_id,
        batch_size=batch_size,
        max_buffer_bytes=budget,
        progress=False,
    )
    assert ref.abs().max() > 0
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(cosine_from_gram(fast), cosine_from_gram(ref), atol=1e-6)


def test_fresh_adapter_general_path_matches_reference(char_tokenizer):
    """The shortcut off: hooks on the LoRA modules themselves, with the zero B."""
    model = _peft(char_tokenizer, nonzero_b=False)
    enc = _encoded(char_tokenizer)
    ref = gradient_gram_reference(model, enc)
    fast = gradient_gram(model, enc, 0, batch_size=3, fresh_adapter_shortcut=False, progress=False)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-12)


def test_no_chat_template_path_matches_reference(char_tokenizer):
    model = _peft(char_tokenizer, nonzero_b=True, targets=("q_proj", "v_proj"))
    enc = _encoded(char_tokenizer, chat=False)
    ref = gradient_gram_reference(model, enc)
    fast = gradient_gram(model, enc, char_tokenizer.pad_token_id, batch_size=4, progress=False)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-12)


def test_fresh_adapter_has_exactly_zero_a_gradients(char_tokenizer):
    model = _peft(char_tokenizer, nonzero_b=False)
    enc = _encoded(char_tokenizer)[:1]
    gradient_gram_reference(model, enc)  # leaves grads zeroed; recompute one to inspect
    model.zero_grad()
    ids = torch.as_tensor([enc[0].input_ids(with_end=False)])
    model(input_ids=ids).logits.sum().backward()
    for pair in lora_pairs(model):
        assert torch.count_nonzero(pair.lora_a.weight.grad) == 0
        assert torch.count_nonzero(pair.lora_b.weight.grad) > 0


def test_answer_only_batch_labels_align_with_full_sequence(char_tokenizer):
    enc = _encoded(char_tokenizer)
    ids, mask, labels, keep = answer_only_batch(enc, pad_id=0)
    t_max = ids.shape[1]
    for row, e in enumerate(enc):
        positions = (labels[row] != -100).nonzero().flatten() + (t_max - keep)
        # Position p predicts token p + 1, which must be the answer.
        assert ids[row, positions + 1].tolist() == list(e.answer_ids)
        assert mask[row].sum() == len(e.prompt_ids) + len(e.answer_ids)


def test_gram_is_invariant_to_example_order(char_tokenizer):
    model = _peft(char_tokenizer, nonzero_b=False)
    enc = _encoded(char_tokenizer)
    perm = [3, 0, 6, 2, 5, 1, 4]
    gram = gradient_gram(model, enc, 0, batch_size=3, progress=False)
    gram_perm = gradient_gram(model, [enc[i] for i in perm], 0, batch_size=3, progress=False)
    torch.testing.assert_close(gram_perm, gram[perm][:, perm], rtol=1e-9, atol=1e-14)


def test_cosine_and_median_from_gram():
    g = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    gram = g @ g.T
    cos = cosine_from_gram(gram)
    assert cos[0, 1] == pytest.approx(1 / np.sqrt(2))
    assert cos[0, 2] == 0.0 and cos[3, 1] == 0.0  # a zero gradient has cosine 0
    upper = [cos[0, 1], cos[0, 2], cos[0, 3], cos[1, 2], cos[1, 3], cos[2, 3]]
    assert median_pairwise(cos) == pytest.approx(np.median(upper))
    assert cos_similarity_score(gram) == pytest.approx(np.median(upper))


def test_bf16_model_with_fp32_adapter_runs_and_agrees(char_tokenizer):
    """peft keeps the adapter in fp32 beside a bf16 model (the CUDA default)."""
    enc = _encoded(char_tokenizer)
    model32 = attach_lora(make_tiny_llama(len(char_tokenizer)), LoraSettings(r=4, alpha=8, seed=3))
    model16 = attach_lora(
        make_tiny_llama(len(char_tokenizer), dtype=torch.bfloat16),
        LoraSettings(r=4, alpha=8, seed=3),
    )
    g32 = gradient_gram(model32, enc, 0, progress=False)
    g16 = gradient_gram(model16, enc, 0, progress=False)
    assert torch.isfinite(g16).all()
    np.testing.assert_allclose(cosine_from_gram(g16), cosine_from_gram(g32), atol=0.05)


def test_adapter_training_other_parameters_is_refused(char_tokenizer):
    from peft import LoraConfig, get_peft_model

    from dataplan.errors import ConfigError

    model = make_tiny_llama(len(char_tokenizer))
    cfg = LoraConfig(
        r=4, target_modules=["q_proj"], modules_to_save=["lm_head"], task_type="CAUSAL_LM"
    )
    with pytest.raises(ConfigError, match="besides LoRA"):
        gradient_gram(get_peft_model(model, cfg), _encoded(char_tokenizer), 0, progress=False)


def test_frozen_space_matches_reference_on_frozen_weights(char_tokenizer):
    """The seed-free limit: per-example gradients of the adapted frozen weights themselves."""
    model = _peft(char_tokenizer, nonzero_b=False)
    enc = _encoded(char_tokenizer)
    fast = gradient_gram(model, enc, 0, batch_size=3, space="frozen", progress=False)
    pairs = lora_pairs(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for pair in pairs:
        pair.base.weight.requires_grad_(True)
    with model.disable_adapter():
        ref = gradient_gram_reference(model, enc)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-12)
    # A fresh adapter's B-gradients are a random projection of these: related, not equal.
    lora = gradient_gram(_peft(char_tokenizer, nonzero_b=False), enc, 0, progress=False)
    assert not torch.allclose(cosine_from_gram_t(lora), cosine_from_gram_t(fast))


def cosine_from_gram_t(g):
    return torch.as_tensor(cosine_from_gram(g))

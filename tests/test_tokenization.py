"""CoS-Low's two tokenisations (docs/methods.md §2.3) on a small BPE tokenizer whose whitespace
pre-tokenisation behaves like GPT-2's: a prompt ending in "\\n\\n" is one token when tokenised
alone (``split``) and two ("\\n", "\\n") when the answer follows in the same string (``joint``)."""

from __future__ import annotations

import json

import pytest

from dataplan.data.formatting import PromptFormatter, encode_examples, tokenization_differences
from dataplan.data.loading import Example


def _bpe_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ?:.\n"))
    vocab = {c: i for i, c in enumerate(["<pad>", "</s>", *chars, "\n\n"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "\n")]))
    # GPT-2's whitespace rule: trailing whitespace before a word leaves its last character.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s+(?!\S)|\s+|\S+"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def test_joint_is_the_one_string_tokenisation_and_differences_are_found():
    tok = _bpe_tokenizer()
    fmt = PromptFormatter(tok, use_chat_template=False)
    nl = tok.convert_tokens_to_ids("\n")
    merged = tok.convert_tokens_to_ids("\n\n")
    examples = [
        Example(id="blank-line", prompt="Q: is it red?\n\n", answer="yes"),
        Example(id="plain", prompt="Q: is it red?", answer=" yes"),
    ]
    split = encode_examples(fmt, examples, tokenization="split")
    joint = encode_examples(fmt, examples, tokenization="joint")
    assert split[0].prompt_ids[-1] == merged  # "\n\n" alone: one token
    # before the answer: two, and the prompt's length alone cuts between them — the second
    # newline becomes the answer's first label (the authors' convention, exactly)
    assert joint[0].prompt_ids[-1] == nl and joint[0].answer_ids[0] == nl
    assert len(joint[0].prompt_ids) == len(split[0].prompt_ids)
    for e, j in zip(examples, joint, strict=True):  # joint = the tokens of one string
        ids = tok(e.prompt + (e.answer or ""), add_special_tokens=False)["input_ids"]
        assert [*j.prompt_ids, *j.answer_ids] == ids and j.end_ids == ()
    assert split[1].prompt_ids == joint[1].prompt_ids
    assert tokenization_differences(fmt, examples) == ["blank-line"]
    # the per-model label exclusions mask answer tokens out of the joint labels only
    y = tok.convert_tokens_to_ids("y")
    (excluded,) = encode_examples(fmt, examples[:1], tokenization="joint", exclude=[y])
    assert y not in excluded.answer_labels and y in joint[0].answer_labels
    assert tokenization_differences(fmt, examples[1:], exclude=[y]) == ["plain"]


def test_published_calibrations_are_joint_and_the_built_in_one_split():
    from dataplan.calibrations import get_calibration

    for name in ("llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "qwen2.5-14b-instruct"):
        assert get_calibration(name).tokenization == "joint", name
    assert get_calibration("smollm2-135m-instruct").tokenization == "split"


def test_estimate_follows_the_calibrations_convention(tiny_model_dir, tmp_path, capsys):
    """Without --tokenization, estimate computes CoS-Low as its calibration was fitted and
    records the convention; --tokenization overrides it; the result says whether the two differ
    on the data."""
    from dataplan.io import write_json
    from dataplan.maths.forecast import Calibration
    from test_cli import run_main
    from test_estimate import _pool

    data = _pool(tmp_path / "pool.jsonl")
    conventions = {}
    for convention in ("joint", "split"):
        cal = Calibration(
            name=convention, coef=0.5, intercept=0.3, n_max=1000, tokenization=convention
        )
        write_json(tmp_path / f"{convention}.json", cal.to_dict())
    base = ["estimate", "--model", str(tiny_model_dir), "--data", str(data), "--n-labeled", "6"]
    base += ["--low-fraction", "0.5", "--max-new-tokens", "2", "--lora-r", "2", "--json"]
    for name, extra in {
        "joint": ["--calibration", str(tmp_path / "joint.json")],
        "split": ["--calibration", str(tmp_path / "split.json")],
        "forced": ["--calibration", str(tmp_path / "joint.json"), "--tokenization", "split"],
    }.items():
        code, out, err = run_main([*base, *extra, "--run-dir", str(tmp_path / name)], capsys)
        assert code == 0, err
        result = json.loads(out)
        config = json.loads((tmp_path / name / "config.json").read_text())
        tok = result["tokenization"]
        conventions[name] = (
            tok["convention"],
            config["tokenization"],
            tok["calibration_convention"],
        )
        # a character-level tokenizer never merges across the prompt/answer boundary
        assert tok["examples_that_differ"] == 0 and "warning" not in tok
    assert conventions == {
        "joint": ("joint", "joint", "joint"),
        "split": ("split", "split", "split"),
        "forced": ("split", "split", "joint"),
    }


@pytest.mark.parametrize(("given", "expected"), [(None, "split"), ("joint", "joint")])
def test_coslow_defaults_to_the_models_calibration_convention(tiny_model_dir, given, expected):
    from dataplan.calibrations import tokenization_for

    assert tokenization_for("llama-3.1-8b-instruct") == "joint"
    assert tokenization_for("smollm2-135m-instruct") == "split"
    assert tokenization_for(str(tiny_model_dir)) == "split"  # no calibration of its own
    from dataplan.workflows.coslow import CosLowConfig

    cfg = CosLowConfig(model=str(tiny_model_dir), labeled="x.jsonl", tokenization=given)
    assert cfg.resolved_tokenization == expected

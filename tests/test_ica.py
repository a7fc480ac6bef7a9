"""ICA scores against a float64 reference, weights from scores, nearest demonstrations, and a
planted noisy example on a toy in-context learner."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import make_tiny_llama
from dataplan.compute.ica import context_prompt, ica_scores
from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.maths.weights import minmax_weights, nearest_by_cosine, top_fraction_weights


def test_minmax_weights_floor_ties_and_nan():
    np.testing.assert_allclose(minmax_weights([1.0, 3.0, 2.0]), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(minmax_weights([1.0, 3.0, 2.0], floor=0.2), [0.2, 1.0, 0.6])
    np.testing.assert_array_equal(minmax_weights([0.7, 0.7, 0.7]), [1.0, 1.0, 1.0])  # uniform
    np.testing.assert_allclose(minmax_weights([np.nan, 0.0, 4.0], floor=0.1), [0.1, 0.1, 1.0])
    with pytest.raises(ValueError):
        minmax_weights([np.nan])
    with pytest.raises(ValueError):
        minmax_weights([1.0, 2.0], floor=1.0)
    np.testing.assert_array_equal(top_fraction_weights([3, 1, 2, 5], 0.5), [1, 0, 0, 1])
    np.testing.assert_array_equal(top_fraction_weights([1, 1, 1], 0.34), [1, 1, 0])  # ties: index


def test_knn_demonstrations_are_the_nearest_by_the_models_own_mean_pooled_states(char_tokenizer):
    """The default retrieval (--demos knn --embedder model) against a float64 loop: each prompt
    alone through the model, the last hidden layer averaged over its tokens, holdout prompts
    ranked by cosine; a holdout example with the example's own prompt is never chosen."""
    from dataplan.training.weighting.ica import ICASettings, choose_demonstrations

    torch.manual_seed(0)
    model = make_tiny_llama(len(char_tokenizer))
    fmt = PromptFormatter(char_tokenizer)
    words = ["red sky", "blue sea", "green", "a cat sat", "7+1", "dog", "sun and moon"]
    examples = [Example(id=f"e{i}", prompt=w, answer="x") for i, w in enumerate(words[:4])]
    holdout = [Example(id=f"h{i}", prompt=w, answer="y") for i, w in enumerate(words[2:])]
    got = choose_demonstrations(
        model, fmt, examples, holdout, ICASettings(k=2, batch_size=3), progress=False
    )
    reference = make_tiny_llama(len(char_tokenizer))
    reference.load_state_dict(model.state_dict())
    reference.double().eval()

    def embed(text: str) -> np.ndarray:
        ids = torch.tensor([char_tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            hidden = reference(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        return hidden[0].mean(dim=0).numpy()

    keys = [embed(h.prompt) for h in holdout]
    for i, e in enumerate(examples):
        q = embed(e.prompt)
        cos = {
            j: q @ x / np.linalg.norm(q) / np.linalg.norm(x)
            for j, x in enumerate(keys)
            if holdout[j].prompt != e.prompt
        }
        assert list(got[i]) == sorted(cos, key=lambda j: -cos[j])[:2], e.prompt
    assert 0 not in got[2] and 1 not in got[3]  # "green", "a cat sat": their own prompts


def test_nearest_by_cosine_matches_a_loop():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    got = nearest_by_cosine(q, x, 3)
    for i in range(5):
        cos = [q[i] @ x[j] / np.linalg.norm(q[i]) / np.linalg.norm(x[j]) for j in range(7)]
        assert list(got[i]) == sorted(range(7), key=lambda j: -cos[j])[:3]
    assert list(nearest_by_cosine(x[:2] * 3.0, x, 1)[:, 0]) == [0, 1]  # scale-free
    with pytest.raises(ValueError):
        nearest_by_cosine(q, x, 8)


def _answer_nll(model, prompt_ids, answer_ids) -> float:
    ids = torch.tensor([[*prompt_ids, *answer_ids]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    start = len(prompt_ids)
    return -sum(float(logp[start + t - 1, a]) for t, a in enumerate(answer_ids))


@pytest.mark.parametrize("chat", [True, False])
def test_ica_score_matches_a_float64_reference(char_tokenizer, chat):
    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64, init_range=0.2)
    fmt = PromptFormatter(char_tokenizer, use_chat_template=chat)
    examples = [
        Example(id="a", prompt="Colour of sky?", answer="blue"),
        Example(id="b", prompt="2+2?", answer="4"),
    ]
    holdout = [Example(id=f"h{i}", prompt=f"Q{i}?", answer=f"A{i}") for i in range(3)]
    demos = np.array([[2, 0], [1, 2]])
    got = ica_scores(model, fmt, examples, holdout, demos)
    mean = ica_scores(model, fmt, examples, holdout, demos, reduction="mean")
    for i, e in enumerate(examples):
        answer = fmt.answer_ids(e.answer)
        base = _answer_nll(model, fmt.prompt_ids(e.prompt), answer)
        shown = [(holdout[j].prompt, holdout[j].answer) for j in demos[i]]
        ctx = _answer_nll(model, fmt.prompt_ids(context_prompt(shown, e.prompt)), answer)
        assert got.loss[i] == pytest.approx(base, rel=1e-9)
        assert got.loss_in_context[i] == pytest.approx(ctx, rel=1e-9)
        assert got.score[i] == pytest.approx(base - ctx, rel=1e-8, abs=1e-10)
        assert mean.score[i] == pytest.approx((base - ctx) / len(answer), rel=1e-8, abs=1e-10)
    assert list(got.answer_tokens) == [4, 1]


class ContextCounter(torch.nn.Module):
    """A toy in-context learner: the next token's logit is 2 × how often the token has occurred
    so far in the sequence — answers shown in the demonstrations become likelier."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **kw):
        counts = torch.nn.functional.one_hot(input_ids, self.vocab).double().cumsum(dim=1)
        logits = 2.0 * counts + self.dummy
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def test_a_planted_noisy_example_gets_a_low_weight(char_tokenizer):
    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    clean = [Example(id=f"c{i}", prompt=f"item {i} is?", answer="good") for i in range(6)]
    noisy = Example(id="noisy", prompt="item 9 is?", answer="zzz")  # a wrong label
    holdout = [Example(id=f"h{i}", prompt=f"item {10 + i} is?", answer="good") for i in range(3)]
    examples = [*clean[:3], noisy, *clean[3:]]
    demos = np.tile(np.arange(3), (len(examples), 1))
    scores = ica_scores(ContextCounter(len(char_tokenizer)), fmt, examples, holdout, demos)
    weights = minmax_weights(scores.score)
    assert weights[3] == 0.0  # the noisy example is the least helped by the holdout
    assert np.all(np.delete(weights, 3) > 0.9)


def test_ica_weighting_keeps_its_demonstrations_across_refreshes(char_tokenizer, monkeypatch):
    import dataplan.training.weighting.ica as ica_module
    from dataplan.training.weighting import get_weighting

    calls = []

    def choose(model, formatter, examples, holdout, settings, progress=False):
        calls.append(1)
        return np.zeros((len(examples), settings.k), dtype=np.int64)

    monkeypatch.setattr(ica_module, "choose_demonstrations", choose)
    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    examples = [Example(id=str(i), prompt=f"item {i}?", answer="good") for i in range(3)]
    holdout = [Example(id="h", prompt="item 10?", answer="good")]
    scheme = get_weighting("ica", holdout=holdout, settings=ica_module.ICASettings(k=1))
    model = ContextCounter(len(char_tokenizer))
    first = scheme.initial(model, examples, fmt)
    again = scheme.refresh_function(model, examples, fmt)(model, 5)
    assert calls == [1] and first.shape == again.shape == (3,)


def _rho_problem(char_tokenizer):
    """(formatter, 6 examples, a 4-example holdout, reference-adapter settings, a float64 model)."""
    from dataplan.training import TrainSettings

    fmt = PromptFormatter(char_tokenizer)
    examples = [
        Example(id=str(i), prompt=f"Colour {i}?", answer=["red", "blue"][i % 2]) for i in range(6)
    ]
    holdout = [Example(id=f"h{i}", prompt=f"Shade {i}?", answer="red") for i in range(4)]
    settings = TrainSettings(batch_size=2, min_steps=3, max_steps=3, lora_r=2)
    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64, init_range=0.2)
    return fmt, examples, holdout, settings, model


def test_rho_scores_are_losses_minus_the_holdout_adapters(char_tokenizer, monkeypatch):
    from dataplan.compute.example_stats import answer_losses
    from dataplan.data.formatting import encode_examples
    from dataplan.training import train
    from dataplan.training.weighting import ICASettings, get_weighting

    fmt, examples, holdout, settings, model = _rho_problem(char_tokenizer)
    scheme = get_weighting("rho", holdout=holdout, settings=ICASettings(), train_settings=settings)
    weights = scheme.initial(model, examples, fmt)
    assert not any("lora" in n for n, _ in model.named_parameters())  # adapter removed
    # by hand: the same adapter (same seed), then summed answer losses with and without it
    enc = encode_examples(fmt, examples)
    tokens = np.array([len(e.answer_ids) for e in enc])
    trained = train(model, holdout, fmt, settings, seed=0)
    with_holdout = answer_losses(trained.model, enc, 0) * tokens
    trained.model.unload()
    scores = answer_losses(model, enc, 0) * tokens - with_holdout
    np.testing.assert_allclose(weights, minmax_weights(scores), rtol=1e-9, atol=1e-12)

    def boom(*a, **k):
        raise AssertionError("the holdout adapter was trained again")

    monkeypatch.setattr("dataplan.training.core.train", boom)
    again = scheme.refresh_function(model, examples, fmt)(
        model, 3
    )  # only the first term is recomputed
    np.testing.assert_allclose(again, weights, rtol=1e-9, atol=1e-12)


def test_rho_reference_losses_are_read_back_from_its_cache(char_tokenizer, tmp_path, monkeypatch):
    """With a cache folder, a second scheme (a resumed `train`) reads the reference losses
    instead of training the holdout adapter again; other settings make another entry."""
    from dataplan.training.weighting import ICASettings, get_weighting

    fmt, examples, holdout, settings, model = _rho_problem(char_tokenizer)

    def scheme(**ica):
        return get_weighting(
            "rho",
            holdout=holdout,
            settings=ICASettings(**ica),
            train_settings=settings,
            cache=tmp_path / "cache",
        )

    first = scheme().initial(model, examples, fmt)
    assert len(list((tmp_path / "cache").glob("rho-reference-*.safetensors"))) == 1

    def boom(*a, **k):
        raise AssertionError("the holdout adapter was trained again")

    with monkeypatch.context() as patch:
        patch.setattr("dataplan.training.core.train", boom)
        resumed = scheme(batch_size=3).initial(model, examples, fmt)  # batching is not a key
    np.testing.assert_allclose(resumed, first, rtol=1e-9, atol=1e-12)
    scheme(score_reduction="mean").initial(model, examples, fmt)  # another setting: trained
    assert len(list((tmp_path / "cache").glob("rho-reference-*.safetensors"))) == 2


def test_one_shot_and_filter(char_tokenizer):
    from dataplan.errors import ConfigError
    from dataplan.training.weighting import ICASettings, get_weighting

    holdout = [Example(id=f"h{i}", prompt=f"item {10 + i} is?", answer="good") for i in range(3)]
    assert get_weighting("one-shot", holdout=holdout, settings=ICASettings(k=3)).ica.k == 1
    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    examples = [Example(id=f"c{i}", prompt=f"item {i} is?", answer="good") for i in range(6)]
    examples += [Example(id="bad", prompt="item 9 is?", answer="zzz")]
    keep = get_weighting("filter", holdout=holdout, settings=ICASettings(demos="random"), keep=0.5)
    w = keep.initial(ContextCounter(len(char_tokenizer)), examples, fmt)
    assert set(w.tolist()) == {0.0, 1.0} and w.sum() == 4 and w[-1] == 0.0  # ⌈0.5 · 7⌉ kept
    with pytest.raises(ConfigError, match="--keep"):
        get_weighting("filter", holdout=holdout, keep=0.0)


def test_preference_scores_are_the_change_of_the_margin(char_tokenizer):
    from dataplan.compute.ica import preference_ica_scores
    from dataplan.data.loading import PreferenceExample

    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64, init_range=0.2)
    fmt = PromptFormatter(char_tokenizer)
    pairs = [
        PreferenceExample(id="a", prompt="Sky?", chosen="blue", rejected="green"),
        PreferenceExample(id="b", prompt="2+2?", chosen="4", rejected="five"),
    ]
    holdout = [
        PreferenceExample(id=f"h{i}", prompt=f"Q{i}?", chosen=f"A{i}", rejected="no")
        for i in range(3)
    ]
    demos = np.array([[0, 2], [1, 0]])
    got = preference_ica_scores(model, fmt, pairs, holdout, demos)
    for i, p in enumerate(pairs):
        shown = [(holdout[j].prompt, holdout[j].chosen) for j in demos[i]]  # chosen responses
        ctx_ids = fmt.prompt_ids(context_prompt(shown, p.prompt))

        def logp(prompt_ids, response):
            return -_answer_nll(model, prompt_ids, fmt.answer_ids(response))

        margin_ctx = logp(ctx_ids, p.chosen) - logp(ctx_ids, p.rejected)
        base = fmt.prompt_ids(p.prompt)
        margin = logp(base, p.chosen) - logp(base, p.rejected)
        assert got.score[i] == pytest.approx(margin_ctx - margin, rel=1e-8, abs=1e-10)
        assert got.score[i] == pytest.approx(got.chosen[i] - got.rejected[i], rel=1e-12)


def test_a_swapped_preference_pair_scores_lowest(char_tokenizer):
    from dataplan.compute.ica import preference_ica_scores
    from dataplan.data.loading import PreferenceExample

    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    pairs = [
        PreferenceExample(id=f"p{i}", prompt=f"item {i} is?", chosen="good", rejected="zzz")
        for i in range(4)
    ]
    pairs.append(
        PreferenceExample(id="swapped", prompt="item 9 is?", chosen="zzz", rejected="good")
    )
    holdout = [
        PreferenceExample(id=f"h{i}", prompt=f"item {10 + i} is?", chosen="good", rejected="zzz")
        for i in range(3)
    ]
    demos = np.tile(np.arange(3), (len(pairs), 1))
    got = preference_ica_scores(ContextCounter(len(char_tokenizer)), fmt, pairs, holdout, demos)
    assert np.argmin(got.score) == 4 and got.score[4] < 0 < got.score[:4].min()


@pytest.fixture(scope="module")
def sentence_model_dir(tmp_path_factory):
    """A tiny sentence-transformers model (the tiny Llama, mean pooling) saved to a folder."""
    st = pytest.importorskip("sentence_transformers")
    from conftest import make_char_tokenizer

    base = tmp_path_factory.mktemp("tiny-encoder-base")
    tok = make_char_tokenizer(chat=False)
    make_tiny_llama(len(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    # A plain transformers folder loads as Transformer + mean pooling.
    encoder = st.SentenceTransformer(str(base), device="cpu")
    path = tmp_path_factory.mktemp("tiny-encoder")
    encoder.save(str(path))
    return path


def test_knn_demonstrations_by_a_sentence_transformers_model(char_tokenizer, sentence_model_dir):
    from sentence_transformers import SentenceTransformer

    from dataplan.training.weighting.ica import ICASettings, choose_demonstrations

    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    words = ["apple pie", "zebra crossing", "quantum field", "river bank", "violin solo"]
    examples = [Example(id=f"e{i}", prompt=w, answer="a") for i, w in enumerate(words)]
    # Variants of each training prompt, and one exact duplicate (never its example's own
    # demonstration).
    holdout = [Example(id=f"h{i}", prompt=w + "!", answer="a") for i, w in enumerate(words)]
    holdout += [Example(id="dup", prompt=words[0], answer="a")]
    settings = ICASettings(k=2, embedder=str(sentence_model_dir))
    got = choose_demonstrations(
        make_tiny_llama(len(char_tokenizer)), fmt, examples, holdout, settings
    )
    encoder = SentenceTransformer(str(sentence_model_dir), device="cpu")
    q = encoder.encode([e.prompt for e in examples]).astype(np.float64)
    x = encoder.encode([h.prompt for h in holdout]).astype(np.float64)
    exclude = np.array([[e.prompt == h.prompt for h in holdout] for e in examples])
    np.testing.assert_array_equal(got, nearest_by_cosine(q, x, 2, exclude=exclude))
    assert 5 not in got[0]  # the exact duplicate is excluded


def test_an_unknown_embedder_is_a_config_error(char_tokenizer, tmp_path):
    from dataplan.errors import ConfigError
    from dataplan.training.weighting.ica import ICASettings, choose_demonstrations

    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    examples = [Example(id="e", prompt="x", answer="a")]
    holdout = [Example(id="h", prompt="y", answer="a")]
    settings = ICASettings(k=1, embedder=str(tmp_path / "no-such-encoder"))
    with pytest.raises(ConfigError, match="--embedder"):
        choose_demonstrations(
            make_tiny_llama(len(char_tokenizer)), fmt, examples, holdout, settings
        )
    with pytest.raises(ConfigError, match="--embedder"):
        ICASettings(embedder=" ")


def test_random_demonstrations_are_seeded_distinct_and_never_the_example_itself():
    from dataclasses import replace

    from dataplan.training.weighting.ica import ICASettings, choose_demonstrations

    examples = [SimpleNamespace(id=f"e{i}", prompt=f"q{i}") for i in range(6)]
    holdout = [SimpleNamespace(id=f"h{j}", prompt=f"q{j}") for j in range(5)]  # e0–e4 inside
    settings = ICASettings(demos="random", k=3, seed=4)
    a = choose_demonstrations(None, None, examples, holdout, settings)
    assert a.shape == (6, 3)
    np.testing.assert_array_equal(a, choose_demonstrations(None, None, examples, holdout, settings))
    other = choose_demonstrations(None, None, examples, holdout, replace(settings, seed=5))
    assert not np.array_equal(a, other)
    for i, row in enumerate(a):
        assert len(set(row.tolist())) == 3 and (i >= 5 or i not in row)

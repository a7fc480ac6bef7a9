"""Turn a prompt (and answer) into token ids, the one place that knows about chat templates.

With a chat template (default when the tokenizer has one)::

    prompt_ids = template([system?, user: prompt], add_generation_prompt=True)
    answer_ids = tokens(answer)          # no special tokens
    end_ids    = [end-of-turn]           # the tokenizer's EOS, e.g. <|im_end|>

Without one, ``prompt_ids`` are the prompt's own tokens (with the tokenizer's usual special
tokens, e.g. BOS) and the answer is tokenised separately with no special tokens, so no token can
straddle the prompt/answer boundary. The loss mask is the caller's choice: CoS-Low gradients use
the answer tokens only; curve training keeps ``end_ids`` in the loss so the model learns to stop.

That is the ``split`` tokenisation, dataplan's own. The ``joint`` one is the CoS-Low authors'
(docs/methods.md §2.3), kept for computing CoS-Low the way their calibrations were fitted::

    ids        = tokens(prompt_text + answer)        # one string, no special tokens
    prompt_len = len(tokens(prompt_text))            # the prompt alone, no special tokens
    prompt_ids, answer_ids = ids[:prompt_len], ids[prompt_len:]
    labels     = answer_ids, minus every id of the model family's exclusion list

(``prompt_text`` the chat-formatted prompt, or the raw prompt without a template; no end-of-turn
token). A token can straddle the boundary — SmolLM2 reads a prompt ending in "\n\n" followed
by "1" as "\n", "\n", "1", and the stray "\n" label is what the exclusion list removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from dataplan.data.loading import Example

# Tokenizers without a known limit report a huge sentinel (1e30) as ``model_max_length``.
_NO_LIMIT = 10**9


class TooLongError(ValueError):
    """An example does not fit the model's context window."""


TOKENIZATIONS = ("split", "joint")

# The CoS-Low authors' per-family label exclusions (utils/calculate_coslow.py,
# mask_non_answer_tokens): every label equal to one of these ids is left out of the loss.
LABEL_EXCLUSIONS: dict[str, tuple[int, ...]] = {
    "mistral": (2, 29473),  # </s>, ''
    "llama": (271, 128009),  # "\n\n", <|eot_id|>
    "qwen": (151643, 151645, 198),  # <|endoftext|>, <|im_end|>, "\n"
    "smollm": (0, 2, 198),  # <|endoftext|>, <|im_end|>, "\n"
}


def model_family(name: str) -> str | None:
    """The family of a model name or path, as the authors' ``get_model_prefix`` reads it: the
    first of mistral, llama, qwen, smollm that the lower-cased name contains."""
    lowered = name.lower()
    return next((f for f in ("mistral", "llama", "qwen", "smollm") if f in lowered), None)


def label_exclusions(name: str) -> tuple[int, ...]:
    """The ``joint`` tokenisation's label exclusions for a model (empty for other families)."""
    family = model_family(name)
    return () if family is None else LABEL_EXCLUSIONS[family]


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example, in three parts: ``prompt_ids + answer_ids + end_ids``."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    end_ids: tuple[int, ...]
    # Which answer tokens are labels (None: all); the ``joint`` tokenisation's exclusions.
    label_mask: tuple[bool, ...] | None = None

    @property
    def answer_labels(self) -> list[int]:
        """The answer tokens that count as labels, in order."""
        if self.label_mask is None:
            return list(self.answer_ids)
        return [t for t, keep in zip(self.answer_ids, self.label_mask, strict=True) if keep]

    def input_ids(self, *, with_end: bool = True) -> list[int]:
        return [*self.prompt_ids, *self.answer_ids, *(self.end_ids if with_end else ())]

    def labels(self, *, with_end: bool = False, with_end_in_input: bool = True) -> list[int]:
        """Labels for a causal-LM loss: -100 everywhere but the answer (and the end if asked)."""
        masked_prompt = [-100] * len(self.prompt_ids)
        end = self.end_ids if with_end_in_input else ()
        end_labels = list(end) if with_end else [-100] * len(end)
        return [*masked_prompt, *self.answer_ids, *end_labels]


@dataclass(frozen=True)
class PromptSettings:
    """How prompts are formatted (shared by every command that loads a model).

    Attributes:
        chat_template: apply the tokenizer's chat template when it has one.
        system_prompt: a system message to put first (None keeps the template's default).
    """

    chat_template: bool = True
    system_prompt: str | None = None

    def formatter(self, tokenizer: PreTrainedTokenizerBase) -> PromptFormatter:
        return PromptFormatter(
            tokenizer, use_chat_template=self.chat_template, system_prompt=self.system_prompt
        )


class PromptFormatter:
    """Formats prompts for one tokenizer.

    Args:
        tokenizer: a Hugging Face tokenizer.
        use_chat_template: apply the tokenizer's chat template when it has one.
        system_prompt: a system message to put first (None keeps the template's default).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        use_chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.chat = bool(use_chat_template and getattr(tokenizer, "chat_template", None))
        self.system_prompt = system_prompt
        eos = tokenizer.eos_token_id
        self.end_ids: tuple[int, ...] = () if eos is None else (int(eos),)
        limit = getattr(tokenizer, "model_max_length", None)
        self.max_length: int | None = int(limit) if limit and limit < _NO_LIMIT else None

    def describe(self) -> dict[str, Any]:
        return {"chat_template": self.chat, "system_prompt": self.system_prompt}

    def prompt_text(self, prompt: str) -> str:
        """The prompt as the model reads it: chat-formatted (with the generation prompt), or as
        given without a template."""
        if not self.chat:
            return prompt
        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return str(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            return list(
                self.tokenizer(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]
            )
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_joint(self, prompt: str, answer: str, exclude: Sequence[int] = ()) -> Encoded:
        """The ``joint`` tokenisation of the module docstring (no end token, ``exclude``d ids
        masked from the labels)."""
        text = self.prompt_text(prompt)
        ids = list(self.tokenizer(text + answer, add_special_tokens=False)["input_ids"])
        cut = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        answer_ids = tuple(ids[cut:])
        excluded = set(exclude)
        mask = tuple(t not in excluded for t in answer_ids)
        if not any(mask):
            raise ValueError("the answer has no tokens left to score in the joint tokenisation")
        encoded = Encoded(tuple(ids[:cut]), answer_ids, (), label_mask=mask)
        self.check_length(len(ids), "the prompt and answer")
        return encoded

    def answer_ids(self, answer: str) -> list[int]:
        return list(self.tokenizer(answer, add_special_tokens=False)["input_ids"])

    def check_length(self, n_tokens: int, what: str) -> None:
        """Raise :class:`TooLongError` if ``n_tokens`` exceed the context window."""
        if self.max_length is not None and n_tokens > self.max_length:
            raise TooLongError(
                f"{what} takes {n_tokens} tokens, more than the model's context window of "
                f"{self.max_length}"
            )

    def encode(self, prompt: str, answer: str) -> Encoded:
        answer_ids = self.answer_ids(answer)
        if not answer_ids:
            raise ValueError("the answer has no tokens")
        encoded = Encoded(tuple(self.prompt_ids(prompt)), tuple(answer_ids), self.end_ids)
        self.check_length(len(encoded.input_ids(with_end=True)), "the prompt and answer")
        return encoded

    def generation_prompts(
        self, examples: Sequence[Example], max_new_tokens: int
    ) -> list[list[int]]:
        """Prompt ids of examples to answer; an example that cannot fit its answer is an input
        error naming its file and line."""
        from dataplan.errors import InputError

        out = []
        for e in examples:
            ids = self.prompt_ids(e.prompt)
            try:
                self.check_length(len(ids) + max_new_tokens, f"the prompt (+{max_new_tokens} new)")
            except TooLongError as err:
                raise InputError(
                    str(err), path=e.source or None, line=e.line, field="prompt"
                ) from None
            out.append(ids)
        return out


def encode_examples(
    formatter: PromptFormatter,
    examples: Sequence[Example],
    *,
    tokenization: str = "split",
    exclude: Sequence[int] = (),
) -> list[Encoded]:
    """Token ids of labelled examples (``split`` or ``joint``, module docstring; ``exclude``:
    the joint labels left out); an example without a usable answer (missing, no tokens, too long
    for the context window) is an input error naming its file, line and field."""
    from dataplan.errors import InputError

    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"tokenization must be split or joint, got {tokenization!r}")
    encoded = []
    for ex in examples:
        where: dict[str, Any] = {"path": ex.source or None, "line": ex.line}
        if ex.answer is None:
            raise InputError("missing answer", **where, field="answer")
        try:
            if tokenization == "joint":
                encoded.append(formatter.encode_joint(ex.prompt, ex.answer, exclude))
                continue
            encoded.append(formatter.encode(ex.prompt, ex.answer))
        except TooLongError as err:
            raise InputError(str(err), **where, field="prompt") from None
        except ValueError as err:
            raise InputError(str(err), **where, field="answer") from None
    return encoded


def tokenization_differences(
    formatter: PromptFormatter, examples: Sequence[Example], exclude: Sequence[int] = ()
) -> list[str]:
    """Ids of the labelled examples whose gradient sequence differs between the ``split`` and
    ``joint`` tokenisations: other prompt tokens before the answer, or other answer labels."""
    out = []
    for ex in examples:
        if ex.answer is None:
            continue
        split = formatter.encode(ex.prompt, ex.answer)
        joint = formatter.encode_joint(ex.prompt, ex.answer, exclude)
        if split.prompt_ids != joint.prompt_ids or split.answer_labels != joint.answer_labels:
            out.append(ex.id)
    return out

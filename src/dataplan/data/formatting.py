"""Turn a prompt (and answer) into token ids, the one place that knows about chat templates.

With a chat template (default when the tokenizer has one)::

    prompt_ids = template([system?, user: prompt], add_generation_prompt=True)
    answer_ids = tokens(answer)          # no special tokens
    end_ids    = [end-of-turn]           # the tokenizer's EOS, e.g. <|im_end|>

Without one, ``prompt_ids`` are the prompt's own tokens (with the tokenizer's usual special
tokens, e.g. BOS) and the answer is tokenised separately with no special tokens, so no token can
straddle the prompt/answer boundary. The loss mask is the caller's choice: CoS-Low gradients use
the answer tokens only; curve training keeps ``end_ids`` in the loss so the model learns to stop.
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


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example, in three parts: ``prompt_ids + answer_ids + end_ids``."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    end_ids: tuple[int, ...]

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

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            messages = []
            if self.system_prompt is not None:
                messages.append({"role": "system", "content": self.system_prompt})
            messages.append({"role": "user", "content": prompt})
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt)["input_ids"])

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


def encode_examples(formatter: PromptFormatter, examples: Sequence[Example]) -> list[Encoded]:
    """Token ids of labelled examples; an example without a usable answer (missing, no tokens,
    too long for the context window) is an input error naming its file, line and field."""
    from dataplan.errors import InputError

    encoded = []
    for ex in examples:
        where: dict[str, Any] = {"path": ex.source or None, "line": ex.line}
        if ex.answer is None:
            raise InputError("missing answer", **where, field="answer")
        try:
            encoded.append(formatter.encode(ex.prompt, ex.answer))
        except TooLongError as err:
            raise InputError(str(err), **where, field="prompt") from None
        except ValueError as err:
            raise InputError(str(err), **where, field="answer") from None
    return encoded

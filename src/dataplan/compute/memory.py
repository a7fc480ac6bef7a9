"""Sizing the batches of a per-example pass to a memory budget (``--max-memory``).

A pass over N examples with backward (CoS-Low gradients, selection statistics) holds, at its
peak, the model's weights W, whatever it stores across batches S (per-example gradients), and
one batch's activations, which grow with the batch's padded token count:

    peak ≈ W + S + F · a(T_max) · B · T_max        (bytes)

where a(T) is the memory saved for backward per token of a length-T sequence (it grows with T:
attention keeps T scores per token and head) and F = :data:`SAFETY` covers what backward adds
on top (the logits' and activations' gradients, the per-example gradient of one layer, what the
allocator holds back; measured). a(T) is *measured*, not modelled: one forward of the longest example under
``torch.autograd.graph.saved_tensors_hooks`` adds up every tensor autograd keeps (each storage
once, parameters excluded), whatever the architecture, attention kernel, dtype or device. The
longest example bounds a(T) for every shorter one, so batches of at most
``(budget − W − S) / (F · a(T_max))`` padded tokens keep the estimate under the budget.

A forward-only pass (ICA scores, losses) keeps one layer's activations at a time: its per-token
cost is the kept logits plus 2 / L of the saved-for-backward memory of an L-layer model
[our choice; measured the same way].

The budget covers the model's weights and everything the pass allocates; not the Python
runtime and libraries (≈ 0.3–0.5 GB of resident memory on a CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from dataplan.errors import ConfigError

SAFETY = 2.5
"""Backward's memory on top of the saved activations (see the module docstring): measured on a
CPU, resident memory grew by 2.2 MB per batch token where autograd saved 0.92 MB (SmolLM2-135M,
~300-token prompts, benchmarks/bench_memory.py) — the logits' and activations' gradients and
what the allocator keeps."""


def parse_memory(text: str | int) -> int:
    """Bytes of a size such as ``4GB`` (10⁹), ``4GiB`` (2³⁰), ``500MB`` or a plain byte count.

    The units are accelerate's (``convert_file_size_to_int``, also behind transformers'
    ``max_memory``), so a size means the same here as in the tools users already know.
    """
    from accelerate.utils import convert_file_size_to_int  # type: ignore[import-untyped]

    value: str | int = text
    if isinstance(text, str) and text.strip().isdigit():
        value = int(text.strip())
    try:
        size = convert_file_size_to_int(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(
            f"--max-memory must be a size such as 4GB, 3.5GiB or 800MB, got {text!r}"
        ) from None
    if size <= 0:
        raise ConfigError(f"--max-memory must be positive, got {text!r}")
    return int(size)


def format_bytes(n: float) -> str:
    """``1.23 GB`` / ``456 MB`` / ``78 kB`` (decimal units, as :func:`parse_memory` reads them)."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers (each storage once)."""
    seen: dict[tuple[torch.device, int], int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        storage = t.untyped_storage()
        seen[(t.device, storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


@contextlib.contextmanager
def saved_tensor_bytes(model: torch.nn.Module) -> Iterator[Callable[[], int]]:
    """Count the bytes autograd saves for backward inside the block (each storage once, the
    model's own weights excluded); the yielded callable returns the running total."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in weights and ptr not in seen:
            seen.add(ptr)
            total[0] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield lambda: total[0]


def per_token_bytes(
    model: torch.nn.Module, forward: Callable[[], object], tokens: int, *, backward: bool
) -> int:
    """Bytes per token of a batch of the pass, from one ``forward()`` of its longest example
    (``tokens`` long) that builds the autograd graph (no backward is run).

    With ``backward`` the saved-for-backward bytes times :data:`SAFETY`; without, a forward
    under ``no_grad`` that holds one layer's activations at a time: 2 / L of them for an
    L-layer model (``config.num_hidden_layers``; all of them when unknown) [our choice].
    """
    with torch.enable_grad(), saved_tensor_bytes(model) as saved:
        out = forward()
        total = saved()
    del out
    if backward:
        return max(1, int(SAFETY * total / tokens))
    layers = int(getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0)
    share = min(1.0, 2 / layers) if layers else 1.0
    return max(1, int(share * total / tokens))


@dataclass(frozen=True)
class BatchPlan:
    """How a pass's examples are batched under a memory budget.

    Attributes:
        max_tokens: padded tokens (batch size × longest length) per batch.
        per_token: measured bytes per token of the longest example (times :data:`SAFETY` for
            a pass with backward).
        weights: bytes of the model's weights.
        stored: bytes the pass keeps across batches.
        budget: the budget the plan fits.
    """

    max_tokens: int
    per_token: int
    weights: int
    stored: int
    budget: int

    def describe(self) -> str:
        return (
            f"batches of ≤ {self.max_tokens} tokens under {format_bytes(self.budget)} "
            f"(weights {format_bytes(self.weights)}, stored {format_bytes(self.stored)}, "
            f"{self.per_token / 1e3:.0f} kB per token)"
        )


def plan_batches(
    budget: int, *, weights: int, stored: int, per_token: int, longest: int
) -> BatchPlan:
    """The largest padded-token count per batch under ``budget``; raises :class:`ConfigError`
    when not even the longest example fits alone."""
    free = budget - weights - stored
    need = per_token * longest
    if free < need:
        raise ConfigError(
            f"--max-memory {format_bytes(budget)} is too small for this pass: the weights take "
            f"{format_bytes(weights)}, stored results {format_bytes(stored)} and the longest "
            f"example ({longest} tokens) alone {format_bytes(need)}; at least "
            f"{format_bytes(weights + stored + need)} is needed"
        )
    return BatchPlan(free // per_token, per_token, weights, stored, budget)

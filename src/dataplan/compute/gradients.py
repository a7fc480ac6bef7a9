"""Per-example LoRA gradients, reduced on the fly to their Gram matrix.

For a LoRA linear ``h = W x + s · B A x`` the gradient of example i's loss ℓ_i with respect to
the adapter's matrices is a sum over its tokens t of outer products of the output gradient and
the input of each LoRA ``nn.Linear``::

    ∂ℓ_i/∂B = Σ_t δ^B_it (A x_it)ᵀ        δ^B_it = ∂ℓ_i/∂(B A x_it)   (scaling s included)
    ∂ℓ_i/∂A = Σ_t δ^A_it x_itᵀ            δ^A_it = s · Bᵀ δ_it

Hooks on every ``lora_A``/``lora_B`` module capture the input (B, T, in) in the forward pass and
the output gradient (B, T, out) in the backward pass of one batched backward of Σ_i ℓ_i; since
examples do not interact, ``einsum("bto,bti->boi")`` gives each example's own gradient. Each
layer's per-example gradients are folded into the Gram matrix ``K[i, j] = <g_i, g_j>`` (float64)
and dropped, so at most one layer's per-example gradients exist at a time when the examples fit
in one batch. Otherwise a layer's per-example gradients are kept until every batch has been
seen, in passes over groups of layers sized to ``max_buffer_bytes``.

With a fresh adapter (B = 0) every A-gradient is exactly zero and the LoRA branch adds nothing
to the forward pass, so the adapter is switched off altogether and the B-gradient is computed
from the frozen layer's own input x and output gradient δ = ∂ℓ/∂h::

    ∂ℓ_i/∂B = s · Σ_t δ_it (A x_it)ᵀ                      (B = 0)

This skips the LoRA branch in both passes (and autograd's own parameter gradients); the graph
starts at the embedding output. Exact, and tested against the reference like the general path.

The loss of example i is the mean cross-entropy over its answer tokens only (prompt and
end-of-turn masked), as in CoS-Low. Logits are computed only for the positions that predict
answer tokens.

:func:`gradient_gram_reference` is the slow reference: one example at a time, ``backward`` into
``.grad``, all adapter gradients flattened — the authors' procedure.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dataplan.compute.batching import forward_kept_logits, length_sorted_batches, pad_batch
from dataplan.data.formatting import Encoded
from dataplan.errors import ConfigError

if TYPE_CHECKING:
    from peft import PeftModel
    from torch.utils.hooks import RemovableHandle
    from transformers import PreTrainedModel

    from dataplan.compute.memory import BatchPlan

log = logging.getLogger(__name__)

ForwardHook = Callable[..., Any]
"""``hook(module, inputs, output)``, as ``register_forward_hook`` takes it."""


@dataclass
class LoraPair:
    """The two ``nn.Linear`` modules of one adapted layer."""

    name: str
    lora_a: torch.nn.Linear
    lora_b: torch.nn.Linear
    base: torch.nn.Module
    scaling: float

    @property
    def b_is_zero(self) -> bool:
        return bool(torch.count_nonzero(self.lora_b.weight) == 0)


def lora_pairs(model: torch.nn.Module) -> list[LoraPair]:
    """Every LoRA layer of the active adapter of a peft model, in module order."""
    from peft.tuners.lora import LoraLayer

    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    pairs.append(
                        LoraPair(
                            f"{name}.{adapter}",
                            cast(torch.nn.Linear, module.lora_A[adapter]),
                            cast(torch.nn.Linear, module.lora_B[adapter]),
                            module.get_base_layer(),
                            float(module.scaling[adapter]),
                        )
                    )
    if not pairs:
        raise ValueError("the model has no active LoRA layers")
    return pairs


def answer_only_batch(
    encoded: Sequence[Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Right-padded ``prompt + answer`` batch and the labels of the logits kept.

    Returns ``(input_ids, attention_mask, labels, keep)``: input (B, T); ``labels`` (B, keep)
    are the targets of the last ``keep`` logit positions (−100 where not an answer token).
    End-of-turn tokens are left out of the input: they are masked in the loss, and causal
    attention means no earlier position sees them.
    """
    seqs = [[*e.prompt_ids, *e.answer_ids] for e in encoded]
    ids, mask = pad_batch(seqs, pad_id, side="right")
    t_max = ids.shape[1]
    # Position p predicts token p + 1; answer tokens sit at [len(prompt), len(seq)).
    first_pred = min(len(e.prompt_ids) - 1 for e in encoded)
    keep = t_max - first_pred
    labels = torch.full((len(encoded), keep), -100, dtype=torch.long)
    for row, e in enumerate(encoded):
        start = len(e.prompt_ids) - 1 - first_pred
        targets = torch.as_tensor(e.answer_ids)
        if e.label_mask is not None:  # the joint tokenisation's excluded labels
            targets = targets.masked_fill(~torch.as_tensor(e.label_mask), -100)
        labels[row, start : start + len(e.answer_ids)] = targets
    return ids, mask, labels, keep


def per_example_answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over each row's answer tokens: (B, K, V), (B, K) → (B,)."""
    dt = torch.promote_types(logits.dtype, torch.float32)  # bf16 -> fp32; float64 stays
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).to(dt),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(labels.shape)
    counts = (labels != -100).sum(dim=1).clamp(min=1)
    return flat.sum(dim=1) / counts


@dataclass
class _Hooked:
    """A module whose per-example weight gradient is ``scale · Σ_t δ_t (transform(x_t))ᵀ``."""

    module: torch.nn.Module
    transform: torch.nn.Linear | None = None  # applied to the input (A for the frozen path)
    scale: float = 1.0

    @property
    def n_params(self) -> int:
        weight = cast(torch.Tensor, self.module.weight)
        out = weight.shape[0]
        inner = (  # r for the A-projected frozen path, else the module's own input size
            self.transform.weight.shape[0] if self.transform is not None else weight.shape[1]
        )
        return out * inner


_HookSetT = TypeVar("_HookSetT", bound="HookSet")


class HookSet:
    """Forward hooks registered on entry and removed on exit (with any stashed inputs)."""

    def __init__(self) -> None:
        self._inputs: dict[int, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def hooks(self) -> list[tuple[torch.nn.Module, ForwardHook]]:
        """``(module, forward hook)`` pairs to register."""
        raise NotImplementedError

    def __enter__(self: _HookSetT) -> _HookSetT:
        for module, hook in self.hooks():
            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._inputs.clear()


@contextlib.contextmanager
def graph_from_embeddings(model: PreTrainedModel | PeftModel) -> Iterator[None]:
    """The autograd graph starts at the embedding output (a leaf): no gradient flows into the
    frozen embedding table, and hooked layers see output gradients whatever is trainable."""

    def make_leaf(
        module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor
    ) -> torch.Tensor:
        return output.detach().requires_grad_(True)

    handle = model.get_input_embeddings().register_forward_hook(make_leaf)
    try:
        yield
    finally:
        handle.remove()


class _GramAccumulator(HookSet):
    """Forward/backward hooks that fold per-example gradients of chosen modules into K."""

    def __init__(
        self, n: int, modules: list[_Hooked], direct: bool, all_reduce: bool = False
    ) -> None:
        super().__init__()
        self.gram = torch.zeros(n, n, dtype=torch.float64)
        self.modules = modules
        self.direct = direct  # the whole set is one batch: reduce in the hook, store nothing
        self.all_reduce = all_reduce  # rows of several ranks: sum the buffers before reducing
        self.buffers: dict[int, torch.Tensor] = {}
        self.rows: torch.Tensor | None = None
        if all_reduce:  # every rank holds every buffer, even one that saw no batch
            for k, m in enumerate(modules):
                weight = cast(torch.Tensor, m.module.weight)
                dt = torch.promote_types(weight.dtype, torch.float32)
                self.buffers[k] = torch.zeros(n, m.n_params, dtype=dt, device=weight.device)

    def hooks(self) -> list[tuple[torch.nn.Module, ForwardHook]]:
        return [(entry.module, self._make_forward_hook(k)) for k, entry in enumerate(self.modules)]

    def _make_forward_hook(self, k: int) -> ForwardHook:
        def hook(module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            if not output.requires_grad:
                return
            x = inputs[0].detach()
            transform = self.modules[k].transform
            if transform is not None:
                with torch.no_grad():  # peft keeps adapters in fp32 beside a bf16 model
                    x = transform(x.to(transform.weight.dtype))
            self._inputs[k] = x
            output.register_hook(lambda grad: self._on_grad(k, grad))

        return hook

    def _on_grad(self, k: int, grad_out: torch.Tensor) -> None:
        x = self._inputs.pop(k)
        # (B, T, out) × (B, T, in) → (B, out, in): each example's own weight gradient.
        # At least float32 (bf16 models), float64 kept for float64 references.
        dt = torch.promote_types(grad_out.dtype, torch.float32)
        per_example = torch.einsum("bto,bti->boi", grad_out.to(dt), x.to(dt)).flatten(1)
        scale = self.modules[k].scale
        if scale != 1.0:
            per_example = per_example * scale
        assert self.rows is not None
        if self.direct:
            g = per_example.double()
            if self.gram.device != g.device:  # accumulate where the gradients are (no syncs)
                self.gram = self.gram.to(g.device)
            rows = self.rows.to(g.device)
            self.gram[rows[:, None], rows[None, :]] += g @ g.T
        else:
            buf = self.buffers.get(k)
            if buf is None:
                buf = self.buffers[k] = torch.zeros(
                    self.gram.shape[0], per_example.shape[1], dtype=dt, device=per_example.device
                )
            buf[self.rows.to(buf.device)] = per_example

    def reduce_buffers(self) -> None:
        for k in sorted(self.buffers):  # the same order on every rank
            buf = self.buffers.pop(k)
            if self.all_reduce:
                import torch.distributed as dist

                dist.all_reduce(buf)
            g = buf.double()
            if self.gram.device != g.device:
                self.gram = self.gram.to(g.device)
            self.gram += g @ g.T


def _hooked_modules(pairs: list[LoraPair], frozen: bool) -> list[_Hooked]:
    if frozen:  # B = 0 everywhere: hook the frozen layers, project their inputs by A
        return [_Hooked(p.base, transform=p.lora_a, scale=p.scaling) for p in pairs]
    hooked: list[_Hooked] = []
    for p in pairs:
        hooked.append(_Hooked(p.lora_b))
        if not p.b_is_zero:
            hooked.append(_Hooked(p.lora_a))
    return hooked


@contextlib.contextmanager
def _frozen_forward(model: PeftModel) -> Iterator[None]:
    """Adapter off (its branch is exactly zero) and a graph that starts at the embeddings."""
    with graph_from_embeddings(model), model.disable_adapter():
        yield


def gradient_gram(
    model: PeftModel,
    encoded: Sequence[Encoded],
    pad_id: int,
    *,
    batch_size: int = 8,
    max_buffer_bytes: int = 4 * 2**30,
    max_memory: int | None = None,
    fresh_adapter_shortcut: bool = True,
    space: str = "lora",
    ranks: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> torch.Tensor:
    """Gram matrix K (N×N, float64) of the per-example LoRA gradients (fast batched path).

    Args:
        model: a peft model with an active LoRA adapter (other parameters frozen).
        encoded: the N labelled examples.
        pad_id: token id used for padding (never attended to).
        batch_size: examples per forward/backward; with ``batch_size >= N`` nothing is stored.
        max_buffer_bytes: bound on stored per-example gradients when N spans several batches;
            layers are split into groups that fit, one pass over the data per group.
        max_memory: a memory budget in bytes for weights, stored gradients and activations:
            batches (at most ``batch_size``) and layer groups are sized to fit it
            (:mod:`dataplan.compute.memory`); the result is the same for any batching.
        fresh_adapter_shortcut: with B = 0, switch the adapter off and compute the B-gradients
            from the frozen layers (exact; see the module docstring).
        space: ``"lora"`` — gradients of the adapter (CoS-Low as published); ``"frozen"`` — the
            seed-free limit: gradients of the adapted frozen weights W themselves,
            ∂ℓ_i/∂W = Σ_t δ_it x_itᵀ, of which a fresh adapter's B-gradient is a random
            projection by A [our addition; needs out×in floats per layer and example].
        ranks: ``(rank, world size)`` of a ``torchrun`` group sharing the pass (every rank
            calls this): rank r computes the per-example gradients of batches r, r + W, …
            into rows of zeros, and one ``all_reduce`` per layer assembles them (a sum with
            zeros: exact) before every rank folds them into K. One process: ``(0, 1)``.
        progress: show a progress bar.
    """
    n = len(encoded)
    pairs = lora_pairs(model)
    _check_only_lora_trainable(model, pairs)
    if space not in ("lora", "frozen"):
        raise ConfigError(f"gradient space must be lora or frozen, got {space!r}")
    if space == "frozen":
        frozen = True
        modules = [_Hooked(p.base) for p in pairs]
    else:
        frozen = fresh_adapter_shortcut and all(p.b_is_zero for p in pairs)
        modules = _hooked_modules(pairs, frozen)
    device = next(p for p in model.parameters() if p.requires_grad).device
    lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in encoded]
    was_training = model.training
    model.eval()  # dropout off

    def context() -> contextlib.AbstractContextManager[None]:
        return _frozen_forward(model) if frozen else contextlib.nullcontext()

    rank, world_size = ranks
    max_tokens = None
    if max_memory is None:
        direct = batch_size >= n and world_size == 1
        groups = [modules] if direct else _split_by_budget(modules, n, max_buffer_bytes)
    else:
        longest = max(range(n), key=lambda i: lengths[i])
        per_token = _per_token_bytes(model, encoded[longest], pad_id, device, context, modules)
        direct, groups, plan = _plan_gram_pass(
            model, modules, n, lengths[longest], per_token, batch_size, max_memory,
            max_buffer_bytes, allow_direct=world_size == 1,
        )  # fmt: skip
        max_tokens = plan.max_tokens
        log.info("gradient pass: %s, %d layer group(s)", plan.describe(), len(groups))
    batches = list(length_sorted_batches(lengths, batch_size, max_tokens))[rank::world_size]
    gram = torch.zeros(n, n, dtype=torch.float64)
    mine = sum(len(b) for b in batches)
    bar = tqdm(total=mine * len(groups), desc="gradients", unit="ex", disable=not progress)
    try:
        for group in groups:
            acc = _GramAccumulator(n, group, direct, all_reduce=world_size > 1)
            with context(), acc:
                for idx in batches:
                    ids, mask, labels, keep = answer_only_batch([encoded[i] for i in idx], pad_id)
                    acc.rows = torch.as_tensor(idx)
                    logits = forward_kept_logits(model, ids.to(device), mask.to(device), keep)
                    per_example_answer_loss(logits, labels.to(device)).sum().backward()
                    bar.update(len(idx))
                acc.reduce_buffers()
                gram += acc.gram.cpu()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        bar.close()
    return gram


def _check_only_lora_trainable(model: torch.nn.Module, pairs: list[LoraPair]) -> None:
    """The fast path sees only LoRA A/B; other trainable weights would be silently missed."""
    covered = {id(p.lora_a.weight) for p in pairs} | {id(p.lora_b.weight) for p in pairs}
    others = [
        name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered
    ]
    if others:
        raise ConfigError(
            f"the adapter trains parameters besides LoRA A/B (e.g. {others[0]}: modules_to_save, DoRA, "
            "bias); per-example gradients of those are not supported"
        )


def _per_token_bytes(
    model: torch.nn.Module,
    example: Encoded,
    pad_id: int,
    device: torch.device,
    context: Callable[[], contextlib.AbstractContextManager[None]],
    modules: list[_Hooked],
) -> int:
    """Bytes per batch token of the Gram pass: measured on ``example`` (the longest), plus the
    inputs the hooks keep per token from forward to backward."""
    from dataplan.compute.memory import per_token_bytes

    ids, mask, labels, keep = answer_only_batch([example], pad_id)

    def forward() -> torch.Tensor:
        with context():
            logits = forward_kept_logits(model, ids.to(device), mask.to(device), keep)
            return per_example_answer_loss(logits, labels.to(device)).sum()

    stash = sum(  # the (A-projected) inputs, float32 at least
        (m.transform.weight.shape[0] if m.transform is not None else m.n_params // _out(m)) * 4
        for m in modules
    )
    return per_token_bytes(model, forward, ids.shape[1], backward=True) + stash


def _out(m: _Hooked) -> int:
    return int(cast(torch.Tensor, m.module.weight).shape[0])


def _plan_gram_pass(
    model: torch.nn.Module,
    modules: list[_Hooked],
    n: int,
    longest: int,
    per_token: int,
    batch_size: int,
    budget: int,
    max_buffer_bytes: int,
    *,
    allow_direct: bool = True,
) -> tuple[bool, list[list[_Hooked]], BatchPlan]:
    """``(direct, layer groups, batch plan)`` of a Gram pass under ``budget`` bytes.

    One batch of all N (nothing stored) when it fits; otherwise per-example gradients are
    stored in float32 for as many layers as the budget leaves beside one longest example's
    activations (fewer groups = fewer passes over the data), and batches take the rest.
    """
    from dataplan.compute.memory import plan_batches, weight_bytes

    weights = weight_bytes(model)
    gram = n * n * 8
    if allow_direct and batch_size >= n and weights + gram + per_token * longest * n <= budget:
        plan = plan_batches(
            budget, weights=weights, stored=gram, per_token=per_token, longest=longest
        )
        return True, [modules], plan
    copy = max(n * m.n_params * 8 for m in modules)  # one layer's float64 copy when reduced
    free = budget - weights - gram - copy - per_token * longest
    groups = _split_by_budget(modules, n, max(1, min(max_buffer_bytes, free)))
    stored = gram + copy + max(sum(n * m.n_params * 4 for m in g) for g in groups)
    plan = plan_batches(
        budget, weights=weights, stored=stored, per_token=per_token, longest=longest
    )
    return False, groups, plan


def _split_by_budget(modules: list[_Hooked], n: int, budget: int) -> list[list[_Hooked]]:
    groups: list[list[_Hooked]] = [[]]
    used = 0
    for m in modules:
        size = n * m.n_params * 4
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(m)
        used += size
    return groups


def gradient_gram_reference(
    model: torch.nn.Module, encoded: Sequence[Encoded], *, progress: bool = False
) -> torch.Tensor:
    """Slow reference: one example at a time, flattened ``.grad`` of every adapter parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    was_training = model.training
    model.eval()
    try:
        for e in tqdm(encoded, desc="gradients (reference)", disable=not progress):
            model.zero_grad(set_to_none=True)
            device = params[0].device
            ids = torch.as_tensor([[*e.prompt_ids, *e.answer_ids]], device=device)
            labels = torch.full_like(ids, -100)
            labels[0, len(e.prompt_ids) :] = torch.as_tensor(e.answer_ids)
            logits = model(input_ids=ids).logits[:, :-1]
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).to(
                    torch.promote_types(logits.dtype, torch.float32)
                ),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
            loss.backward()
            rows.append(
                torch.cat(
                    [
                        p.grad.detach().reshape(-1).double().cpu()
                        for p in params
                        if p.grad is not None
                    ]
                )
            )
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    g = torch.stack(rows)
    return g @ g.T


def lora_parameter_count(model: torch.nn.Module) -> int:
    """Trainable adapter parameters (the length of a flattened per-example gradient)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "LoraPair",
    "gradient_gram",
    "gradient_gram_reference",
    "lora_pairs",
    "lora_parameter_count",
]

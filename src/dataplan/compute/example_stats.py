"""Per-example losses and per-example LoRA gradient statistics, batched, for selection.

Gradient statistics without per-example gradients of the whole model. For one LoRA ``nn.Linear``
(``lora_A`` or ``lora_B`` of an adapter) with input x_it ∈ R^in and output gradient δ_it ∈ R^out at
token t of example i, example i's weight gradient is ``G_i = Σ_t δ_it x_itᵀ`` (out × in), and

    ‖G_i‖²       = Σ_{t,s} (δ_it·δ_is)(x_it·x_is)      "ghost" norm: O(T²(in+out)), no G_i
                 = ‖einsum(δ_i, x_i)‖²                  direct:       O(T·in·out)
    <G_i, R>     = Σ_t δ_itᵀ R x_it                     inner product with a fixed R, no G_i

The cheaper of the two norm forms is chosen per layer and batch (ghost when T(in+out) < in·out,
as in the "book-keeping" ghost clipping of Bu et al. 2023); for LoRA's thin matrices the direct
form usually wins and the per-example gradient of *one layer* exists for a moment. Summing over
layers gives the statistics of the whole adapter. The only statistic that needs G_i itself is
the sum over ensemble members ``S_i = Σ_m G_i^m`` (classic SNR), held for one batch of examples.

Several adapters (ensemble members × checkpoints) live in one peft model; each batch is run once
per adapter (``set_adapter``). Parameters are frozen and the graph starts at the embedding
output, so backward computes activation gradients only; the hooks form the weight statistics.

The example loss is the mean cross-entropy over its answer tokens (as in CoS-Low).
:func:`gradient_stats_reference` computes the same statistics one example at a time from
``.grad`` of the flattened adapter parameters, in the model's dtype (float64 in the tests).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dataplan.compute.batching import forward_kept_logits, length_sorted_batches
from dataplan.compute.gradients import (
    ForwardHook,
    HookSet,
    answer_only_batch,
    graph_from_embeddings,
    per_example_answer_loss,
)
from dataplan.data.formatting import Encoded

if TYPE_CHECKING:
    from peft import PeftModel

    from dataplan.compute.memory import BatchPlan

log = logging.getLogger(__name__)


def adapter_modules(model: torch.nn.Module, adapter: str) -> dict[str, torch.nn.Linear]:
    """``{"<layer>.A": lora_A, "<layer>.B": lora_B}`` of one named adapter, in module order."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.nn.Linear] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            out[f"{name}.A"] = cast(torch.nn.Linear, module.lora_A[adapter])
            out[f"{name}.B"] = cast(torch.nn.Linear, module.lora_B[adapter])
    if not out:
        raise ValueError(f"the model has no LoRA adapter named {adapter!r}")
    return out


@torch.no_grad()
def answer_losses(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    pad_id: int,
    *,
    batch_size: int = 16,
    max_memory: int | None = None,
    progress: bool = False,
    desc: str = "losses",
) -> np.ndarray:
    """Mean answer-token cross-entropy of every example, shape (N,), float64.

    ``max_memory``: a budget in bytes the batches (at most ``batch_size``) are sized to
    (:mod:`dataplan.compute.memory`; a forward without graph).
    """
    device = next(model.parameters()).device
    out = np.zeros(len(encoded), dtype=np.float64)
    lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in encoded]
    was_training = model.training
    model.eval()
    try:
        max_tokens = None
        if max_memory is not None and encoded:
            plan = loss_pass_plan(model, encoded, pad_id, max_memory, backward=False)
            max_tokens = plan.max_tokens
        with tqdm(total=len(encoded), desc=desc, unit="ex", disable=not progress) as bar:
            for idx in length_sorted_batches(lengths, batch_size, max_tokens):
                ids, mask, labels, keep = answer_only_batch([encoded[i] for i in idx], pad_id)
                logits = forward_kept_logits(model, ids.to(device), mask.to(device), keep)
                loss = per_example_answer_loss(logits, labels.to(device))
                out[idx] = loss.double().cpu().numpy()
                bar.update(len(idx))
    finally:
        model.train(was_training)
    return out


def loss_pass_plan(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    pad_id: int,
    budget: int,
    *,
    backward: bool,
    stored: int = 0,
) -> BatchPlan:
    """Token budget of the batches of a pass of answer losses (with or without ``backward``)
    under ``budget`` bytes, measured on the longest example (:mod:`dataplan.compute.memory`)."""
    from dataplan.compute.memory import per_token_bytes, plan_batches, weight_bytes

    lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in encoded]
    longest = max(range(len(encoded)), key=lengths.__getitem__)
    ids, mask, labels, keep = answer_only_batch([encoded[longest]], pad_id)
    device = next(model.parameters()).device

    def forward() -> torch.Tensor:
        with graph_from_embeddings(cast("PeftModel", model)):
            logits = forward_kept_logits(model, ids.to(device), mask.to(device), keep)
            return per_example_answer_loss(logits, labels.to(device)).sum()

    per_token = per_token_bytes(model, forward, ids.shape[1], backward=backward)
    plan = plan_batches(
        budget,
        weights=weight_bytes(model),
        stored=stored,
        per_token=per_token,
        longest=lengths[longest],
    )
    log.info("%s pass: %s", "gradient" if backward else "loss", plan.describe())
    return plan


@dataclass
class GradientStats:
    """Per-example statistics for each adapter.

    Attributes:
        sq_norms: ``{adapter: ‖g_i‖²}``, arrays of shape (N,).
        inner: ``{adapter: <g_i, r>}`` with the adapter's reference gradient r, shape (N,).
        sq_norm_of_sum: ``{group: ‖Σ_{m in group} g_i^m‖²}``, shape (N,).
    """

    sq_norms: dict[str, np.ndarray] = field(default_factory=dict)
    inner: dict[str, np.ndarray] = field(default_factory=dict)
    sq_norm_of_sum: dict[str, np.ndarray] = field(default_factory=dict)


class _StatsHooks(HookSet):
    """Hooks on the LoRA linears of several adapters; statistics of the active one's batch."""

    def __init__(
        self,
        modules: Mapping[str, Mapping[str, torch.nn.Linear]],
        references: Mapping[str, Mapping[str, torch.Tensor]],
        group_of: Mapping[str, str],
        norm_method: str = "auto",
    ) -> None:
        super().__init__()
        if norm_method not in ("auto", "ghost", "direct"):
            raise ValueError(f"norm_method must be auto, ghost or direct, got {norm_method!r}")
        self.norm_method = norm_method
        self.modules = modules
        self.references = references
        self.group_of = group_of
        self.adapter: str | None = None
        self.sq = torch.zeros(0, dtype=torch.float64)
        self.inner = torch.zeros(0, dtype=torch.float64)
        self.sums: dict[str, torch.Tensor] = {}  # layer key -> (B, out·in) of the current group
        self.mean_grad: dict[str, torch.Tensor] | None = None  # when accumulating Σ_i G_i

    def hooks(self) -> list[tuple[torch.nn.Module, ForwardHook]]:
        return [
            (module, self._forward(adapter, key))
            for adapter, mods in self.modules.items()
            for key, module in mods.items()
        ]

    def start_batch(self, batch: int, device: torch.device | str = "cpu") -> None:
        # Accumulated on the model's device: one transfer per batch, not one per layer (a GPU
        # would otherwise synchronise hundreds of times per backward).
        self.sq = torch.zeros(batch, dtype=torch.float64, device=device)
        self.inner = torch.zeros(batch, dtype=torch.float64, device=device)

    def _forward(self, adapter: str, key: str) -> ForwardHook:
        def hook(module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            if adapter != self.adapter or not output.requires_grad:
                return
            self._inputs[id(module)] = inputs[0].detach()
            output.register_hook(lambda grad: self._on_grad(module, key, grad))

        return hook

    def _on_grad(self, module: torch.nn.Module, key: str, grad: torch.Tensor) -> None:
        x = self._inputs.pop(id(module))
        dt = torch.promote_types(grad.dtype, torch.float32)  # bf16 models: statistics in fp32
        d, x = grad.to(dt), x.to(dt)
        n_out, n_in = d.shape[-1], x.shape[-1]
        if self.mean_grad is not None:
            total = torch.einsum("bto,bti->oi", d, x).double()
            prev = self.mean_grad.get(key)
            self.mean_grad[key] = total if prev is None else prev + total
            return
        assert self.adapter is not None
        group = self.group_of.get(self.adapter)
        t = d.shape[1]
        per_example = None
        ghost = {"ghost": True, "direct": False}.get(
            self.norm_method, t * (n_in + n_out) < n_in * n_out
        )
        if group is not None or not ghost:
            per_example = torch.einsum("bto,bti->boi", d, x)  # (B, out, in): this layer only
            sq = per_example.flatten(1).double().pow(2).sum(1)
        else:  # ghost norm: Σ_{t,s} (δ_t·δ_s)(x_t·x_s), never forming G_i
            sq = (torch.bmm(d, d.transpose(1, 2)) * torch.bmm(x, x.transpose(1, 2))).sum((1, 2))
        self.sq += sq.double()
        ref = self.references.get(self.adapter, {}).get(key)
        if ref is not None:
            r = ref.to(device=d.device, dtype=dt)
            self.inner += ((d @ r) * x).sum((1, 2)).double()
        if group is not None:
            assert per_example is not None
            flat = per_example.flatten(1)
            prev = self.sums.get(key)
            self.sums[key] = flat if prev is None else prev + flat


@contextlib.contextmanager
def _activation_grads_only(model: PeftModel) -> Iterator[None]:
    """Freeze every parameter; the graph starts at the embedding output (a leaf). On exit the
    active adapter and every ``requires_grad`` flag are as they were."""
    active = getattr(model, "active_adapter", None)
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()  # dropout off
    try:
        with graph_from_embeddings(model):
            yield
    finally:
        if active is not None and getattr(model, "active_adapter", None) != active:
            model.set_adapter(active)
        for p, flag in saved:
            p.requires_grad_(flag)
        model.train(was_training)


def _use_adapter(model: PeftModel, adapter: str) -> None:
    """Activate ``adapter``; peft's ``set_adapter`` makes it trainable, which we undo."""
    model.set_adapter(adapter)
    for p in model.parameters():
        p.requires_grad_(False)


def _batch_backward(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    idx: list[int],
    pad_id: int,
    device: torch.device,
) -> None:
    ids, mask, labels, keep = answer_only_batch([encoded[i] for i in idx], pad_id)
    logits = forward_kept_logits(model, ids.to(device), mask.to(device), keep)
    per_example_answer_loss(logits, labels.to(device)).sum().backward()


def mean_gradient(
    model: PeftModel,
    encoded: Sequence[Encoded],
    pad_id: int,
    adapter: str,
    *,
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """``(1/N) Σ_i ∂ℓ_i/∂W`` for every LoRA matrix W of ``adapter``: ``{key: (out, in)}`` float64.

    The LESS-style target direction (mean gradient of a small target set).
    """
    if not encoded:
        raise ValueError("the target set is empty")
    modules = {adapter: adapter_modules(model, adapter)}
    device = next(model.parameters()).device
    lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in encoded]
    hooks = _StatsHooks(modules, {}, {})
    hooks.mean_grad = {}
    hooks.adapter = adapter
    with _activation_grads_only(model), hooks:
        _use_adapter(model, adapter)
        for idx in length_sorted_batches(lengths, batch_size):
            _batch_backward(model, encoded, idx, pad_id, device)
    return {k: v / len(encoded) for k, v in hooks.mean_grad.items()}


def gradient_stats(
    model: PeftModel,
    encoded: Sequence[Encoded],
    pad_id: int,
    adapters: Sequence[str],
    *,
    references: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    sum_groups: Mapping[str, Sequence[str]] | None = None,
    batch_size: int = 8,
    max_memory: int | None = None,
    norm_method: str = "auto",
    progress: bool = False,
) -> GradientStats:
    """Per-example gradient statistics of every adapter in ``adapters`` (fast batched path).

    Args:
        model: a peft model holding the named adapters (same LoRA shapes).
        encoded: the N labelled examples.
        pad_id: padding token id.
        adapters: names of the adapters to score, each run once per batch.
        references: ``{adapter: {key: R}}``; gives ``inner[adapter] = <g_i, R>``.
        sum_groups: ``{group: [adapters]}``; gives ``sq_norm_of_sum[group] = ‖Σ g_i^m‖²``.
        batch_size: examples per forward/backward.
        max_memory: a budget in bytes the batches (at most ``batch_size``) are sized to
            (:mod:`dataplan.compute.memory`); the statistics are the same for any batching.
        norm_method: ``auto`` (the cheaper per layer), ``ghost`` or ``direct`` (for tests and
            benchmarks; adapters in a sum group always use ``direct``, which they need anyway).
        progress: show a progress bar.
    """
    references = references or {}
    sum_groups = sum_groups or {}
    group_of = {a: g for g, members in sum_groups.items() for a in members}
    unknown = (set(group_of) | set(references)) - set(adapters)
    if unknown:
        raise ValueError(f"references/groups name adapters not scored: {sorted(unknown)}")
    # Adapters of one group run back to back, so the group's running sum is one batch at most.
    order = sorted(adapters, key=lambda a: (group_of.get(a, ""), list(adapters).index(a)))
    modules = {a: adapter_modules(model, a) for a in order}
    n = len(encoded)
    stats = GradientStats(
        sq_norms={a: np.zeros(n) for a in order},
        inner={a: np.zeros(n) for a in references},
        sq_norm_of_sum={g: np.zeros(n) for g in sum_groups},
    )
    device = next(model.parameters()).device
    lengths = [len(e.prompt_ids) + len(e.answer_ids) for e in encoded]
    hooks = _StatsHooks(modules, references, group_of, norm_method)
    bar = tqdm(total=n * len(order), desc="gradient stats", unit="ex", disable=not progress)
    try:
        with _activation_grads_only(model), hooks:
            max_tokens = None
            if max_memory is not None and n:
                _use_adapter(model, order[0])
                batch_size, max_tokens = _stats_batching(
                    model, encoded, pad_id, modules, group_of, batch_size, max_memory
                )
            for idx in length_sorted_batches(lengths, batch_size, max_tokens):
                rows = np.asarray(idx)
                for pos, adapter in enumerate(order):
                    _use_adapter(model, adapter)
                    hooks.adapter = adapter
                    hooks.start_batch(len(idx), device)
                    _batch_backward(model, encoded, idx, pad_id, device)
                    stats.sq_norms[adapter][rows] = hooks.sq.cpu().numpy()
                    if adapter in references:
                        stats.inner[adapter][rows] = hooks.inner.cpu().numpy()
                    group = group_of.get(adapter)
                    last_of_group = group is not None and (
                        pos + 1 == len(order) or group_of.get(order[pos + 1]) != group
                    )
                    if last_of_group:
                        assert group is not None
                        # sum() of tensors: a tensor (typed int | Tensor for its start 0).
                        total = cast(
                            torch.Tensor,
                            sum(s.double().pow(2).sum(1) for s in hooks.sums.values()),
                        )
                        stats.sq_norm_of_sum[group][rows] = total.cpu().numpy()
                        hooks.sums.clear()
                    bar.update(len(idx))
    finally:
        hooks.adapter = None
        bar.close()
    return stats


def _stats_batching(
    model: torch.nn.Module,
    encoded: Sequence[Encoded],
    pad_id: int,
    modules: Mapping[str, Mapping[str, torch.nn.Linear]],
    group_of: Mapping[str, str],
    batch_size: int,
    budget: int,
) -> tuple[int, int]:
    """``(batch size, token budget)`` of :func:`gradient_stats` under ``budget`` bytes: a sum
    group keeps each example's whole adapter gradient for one batch (float32), so its batches
    are also capped in count."""
    from dataplan.compute.memory import weight_bytes

    per_example = 0
    if group_of:
        adapter = next(a for a in modules if a in group_of)
        per_example = sum(m.weight.numel() * 4 for m in modules[adapter].values())
    free = budget - weight_bytes(model)
    while batch_size > 1 and batch_size * per_example > free / 2:
        batch_size //= 2
    plan = loss_pass_plan(
        model, encoded, pad_id, budget, backward=True, stored=batch_size * per_example
    )
    return batch_size, plan.max_tokens


def gradient_stats_reference(
    model: PeftModel,
    encoded: Sequence[Encoded],
    adapters: Sequence[str],
    *,
    references: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    sum_groups: Mapping[str, Sequence[str]] | None = None,
) -> GradientStats:
    """Slow reference: one example and one adapter at a time, flattened ``.grad``."""
    references = references or {}
    sum_groups = sum_groups or {}
    n = len(encoded)
    flat: dict[str, list[torch.Tensor]] = {a: [] for a in adapters}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for adapter in adapters:
            model.set_adapter(adapter)
            mods = adapter_modules(model, adapter)
            for p, _ in saved:
                p.requires_grad_(False)
            for m in mods.values():
                m.weight.requires_grad_(True)
            for e in encoded:
                for m in mods.values():
                    m.weight.grad = None
                device = next(iter(mods.values())).weight.device
                ids = torch.as_tensor([[*e.prompt_ids, *e.answer_ids]], device=device)
                logits = model(input_ids=ids).logits[0, len(e.prompt_ids) - 1 : -1]
                loss = F.cross_entropy(
                    logits.double(), torch.as_tensor(e.answer_ids, device=device)
                )
                loss.backward()
                flat[adapter].append(
                    torch.cat(
                        [
                            cast(torch.Tensor, m.weight.grad).reshape(-1).double().cpu()
                            for m in mods.values()
                        ]
                    )
                )
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        model.train(was_training)
    stats = GradientStats()
    g = {a: torch.stack(rows) for a, rows in flat.items()}  # (N, P) each
    for a in adapters:
        stats.sq_norms[a] = g[a].pow(2).sum(1).numpy()
    for a, ref in references.items():
        keys = list(adapter_modules(model, a))
        r = torch.cat([ref[k].reshape(-1).double().cpu() for k in keys])
        stats.inner[a] = (g[a] @ r).numpy()
    for group, members in sum_groups.items():
        s = cast(torch.Tensor, sum(g[a] for a in members))  # sum() of tensors: a tensor
        stats.sq_norm_of_sum[group] = s.pow(2).sum(1).numpy()
    assert all(v.shape == (n,) for v in stats.sq_norms.values())
    return stats


__all__ = [
    "GradientStats",
    "adapter_modules",
    "answer_losses",
    "gradient_stats",
    "gradient_stats_reference",
    "mean_gradient",
]

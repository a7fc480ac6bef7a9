"""Model-based scores of ``dataplan select``: the shared passes that methods declare they read.

A method (:class:`dataplan.selection.SelectionMethod`) reads the frozen proxy's losses
(``proxy_losses``) or the ensemble's per-example gradient statistics (``needs_ensemble``); the
passes here compute and cache them, then the method's ``score`` turns them into scores. No
method is named here.

Each pass over the pool is cut into shards (``cfg.shard_size`` examples); every shard's arrays are
a :class:`~dataplan.store.ResultStore` entry of the run folder's ``shards/`` folder,
``shards/<array>-<size>-<i>.safetensors`` (start/stop recorded inside as ``_bounds``), so a
crashed run resumes shard by shard, and ``torchrun`` ranks share the shards. Proxy losses are
named by method (``loss-…``, ``ifd-…``); gradient statistics by what they are of —
``sq-<adapter weights>`` (per-example squared norms), ``inner-<adapter weights>-<target>``
(inner products with a target's mean gradient; ``target-…`` holds that gradient's norm),
``sum-<member weights>`` (norms of a group of adapters' summed gradient, e.g. the classic SNR's
members) — so every method that reads an adapter shares its pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dataplan.compute.distributed import local_device, run_sharded, shard_ranges, world
from dataplan.data.formatting import Encoded, PromptFormatter, encode_examples
from dataplan.data.loading import Example
from dataplan.digests import file_digest, json_digest
from dataplan.selection import EnsembleLayout, PoolStatistics, SelectionMethod
from dataplan.store import ResultStore, ShardCache
from dataplan.workflows.run_folder import RunFolder

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from dataplan.models.loading import LoadedModel
    from dataplan.workflows.select_config import SelectConfig


def _unconditioned_prefix(
    formatter: PromptFormatter, tokenizer: PreTrainedTokenizerBase
) -> tuple[int, ...]:
    """Context for PPL(answer): the prompt template around an empty prompt (BOS/EOS if none)."""
    prefix = tuple(formatter.prompt_ids(""))
    if prefix:
        return prefix
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return (int(start),)


def score_pool(
    cfg: SelectConfig,
    run: RunFolder,
    pool: list[Example],
    target: list[Example] | None,
    loaded: LoadedModel | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float], list[str]]:
    """``(scores, extra columns, seconds per stage, notes)`` for a model-based method."""
    method = cfg.selection_method
    _, world_size = world()
    if loaded is None:
        loaded = cfg.spec.load(device=local_device(cfg.device))
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    encoded = encode_examples(formatter, pool)
    pad = loaded.tokenizer.pad_token_id
    shards = shard_ranges(len(pool), cfg.shard_size, world_size)
    store = ResultStore(run.file("shards"))
    if method.proxy_losses:
        stats, seconds = _loss_pass(cfg, method, store, loaded, formatter, encoded, pad, shards)
    elif method.needs_ensemble:
        stats, seconds = _gradient_pass(
            cfg, method, run, store, loaded, formatter, pool, encoded, target, pad, shards
        )
    else:
        raise ValueError(
            f"method {method.name!r} needs a model but declares neither proxy_losses nor "
            "needs_ensemble"
        )
    stats.pool = pool
    scores, columns, notes = method.score(cfg, stats)
    return scores, columns, seconds, notes


def _loss_pass(
    cfg: SelectConfig,
    method: SelectionMethod,
    store: ResultStore,
    loaded: LoadedModel,
    formatter: PromptFormatter,
    encoded: list[Encoded],
    pad: int,
    shards: list[range],
) -> tuple[PoolStatistics, dict[str, float]]:
    """The frozen proxy's answer losses the method reads, cached under the method's name."""
    from dataplan.compute.example_stats import answer_losses

    model = loaded.model
    prefix = _unconditioned_prefix(formatter, loaded.tokenizer)
    cache = ShardCache(store, method.name, shards)
    progress = cfg.progress and world()[0] == 0

    def work(i: int, r: range) -> dict[str, np.ndarray]:
        enc = [encoded[j] for j in r]
        out = {}
        if "loss" in method.proxy_losses:
            out["loss"] = answer_losses(
                model,
                enc,
                pad,
                batch_size=cfg.loss_batch_size,
                max_memory=cfg.memory_budget,
                progress=progress,
                desc=f"losses (shard {i + 1}/{len(shards)})",
            )
        if "loss_unconditioned" in method.proxy_losses:
            bare = [Encoded(prefix, e.answer_ids, e.end_ids) for e in enc]
            out["loss_unconditioned"] = answer_losses(
                model,
                bare,
                pad,
                batch_size=cfg.loss_batch_size,
                max_memory=cfg.memory_budget,
                progress=False,
            )
        return cache.put(i, out)

    start = time.perf_counter()
    parts = run_sharded(shards, work, cached=cache.get)
    seconds = {"scoring": round(time.perf_counter() - start, 3)}
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return PoolStatistics(pool=[], columns=columns), seconds


def _gradient_pass(
    cfg: SelectConfig,
    method: SelectionMethod,
    run: RunFolder,
    store: ResultStore,
    loaded: LoadedModel,
    formatter: PromptFormatter,
    pool: list[Example],
    encoded: list[Encoded],
    target: list[Example] | None,
    pad: int,
    shards: list[range],
) -> tuple[PoolStatistics, dict[str, float]]:
    """Train (or find) the ensemble, then the per-example statistics the method reads."""
    from dataplan.compute.example_stats import gradient_stats
    from dataplan.training.ensemble import load_ensemble, train_ensemble

    progress = cfg.progress and world()[0] == 0
    settings = cfg.ensemble
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    _, world_size = world()
    identity = settings.to_dict()
    if world_size > 1:  # the global batch (and so the training) depends on the processes
        identity["world_size"] = world_size
    ensemble_id = json_digest(identity)
    dirs = train_ensemble(
        loaded.model,
        pool,
        formatter,
        settings,
        run.file(f"ensemble-{ensemble_id}"),
        progress=progress,
    )
    seconds["ensemble_training"] = round(time.perf_counter() - start, 3)
    layout = EnsembleLayout(settings.members, len(settings.checkpoints))
    adapters = method.adapters(cfg, layout)
    groups = method.sum_groups(cfg, layout)
    model = load_ensemble(loaded.model, dirs)
    try:
        # Statistics are cached per adapter — named by its weights' digest, so a retrained
        # member invalidates — not per method: methods that read the same adapters share
        # passes (gradnorm reuses gsnr's late norms; gradsim's pass, which yields every
        # member's and checkpoint's norms with its inner products, serves both).
        weight_of = {
            layout.adapter(m, c): file_digest(dirs[m][c] / "adapter_model.safetensors")[:12]
            for m in range(layout.members)
            for c in range(layout.n_checkpoints)
        }
        references: dict[str, Any] = {}
        target_norm = None
        target_id = ""
        if method.needs_target and target:
            target_encoded = encode_examples(formatter, target)
            target_id = json_digest([[e.prompt_ids, e.answer_ids] for e in target_encoded])
            start = time.perf_counter()
            references, target_norm = _target_gradients(
                store, model, target_encoded, target_id, pad, adapters, weight_of, cfg
            )
            # The target's gradients themselves are computed lazily, inside the scoring of
            # the first shard that needs them: their time then counts under "scoring".
            seconds["target_gradients"] = round(time.perf_counter() - start, 3)
        caches = {("sq", a): ShardCache(store, f"sq-{weight_of[a]}", shards) for a in adapters}
        if references:
            for a in adapters:
                name = f"inner-{weight_of[a]}-{target_id}"
                caches[("inner", a)] = ShardCache(store, name, shards)
        for group, members in groups.items():
            group_id = json_digest([weight_of[a] for a in members])
            caches[("sum", group)] = ShardCache(store, f"sum-{group_id}", shards)

        def assemble(found: dict) -> dict[str, np.ndarray]:
            out = {"sq_norms": np.stack([found[("sq", a)]["v"] for a in adapters])}
            if references:
                out["inner"] = np.stack([found[("inner", a)]["v"] for a in adapters])
            for group in groups:
                out[f"sum:{group}"] = found[("sum", group)]["v"][None, :]
            return out

        def load(i: int) -> dict[str, np.ndarray] | None:
            found = {key: cache.get(i) for key, cache in caches.items()}
            return None if any(v is None for v in found.values()) else assemble(found)

        def work(i: int, r: range) -> dict[str, np.ndarray]:
            found = {key: cache.get(i) for key, cache in caches.items()}
            missing = {key for key, v in found.items() if v is None}
            need_sums = {g: members for g, members in groups.items() if ("sum", g) in missing}
            summed = {a for members in need_sums.values() for a in members}
            need = [
                a
                for a in adapters
                if ("sq", a) in missing or ("inner", a) in missing or a in summed
            ]
            stats = gradient_stats(
                model,
                [encoded[j] for j in r],
                pad,
                need,
                references={a: references[a]() for a in need if a in references},
                sum_groups=need_sums or None,
                batch_size=cfg.stats_batch_size,
                max_memory=cfg.memory_budget,
                progress=progress,
            )
            for a in need:
                found[("sq", a)] = caches[("sq", a)].put(i, {"v": stats.sq_norms[a]})
                if ("inner", a) in caches:
                    found[("inner", a)] = caches[("inner", a)].put(i, {"v": stats.inner[a]})
            for g in need_sums:
                found[("sum", g)] = caches[("sum", g)].put(i, {"v": stats.sq_norm_of_sum[g]})
            return assemble(found)

        start = time.perf_counter()
        parts = run_sharded(shards, work, cached=load)
        seconds["scoring"] = round(time.perf_counter() - start, 3)
    finally:
        loaded.model = model.unload()
        loaded.model.eval()
    arrays = {key: np.concatenate([p[key] for p in parts], axis=1) for key in parts[0]}
    stats = PoolStatistics(
        pool=[],
        layout=layout,
        adapters=list(adapters),
        sq_norms=arrays["sq_norms"],
        inner=arrays.get("inner"),
        target_norm=target_norm,
        sq_norm_of_sum={g: arrays[f"sum:{g}"][0] for g in groups},
    )
    if set(layout.late) <= set(adapters):  # the shared columns
        late_norms = stats.norms(layout.late)
        stats.columns["grad_norm_late"] = late_norms.mean(axis=0)
        if layout.members > 1:
            mean = stats.columns["grad_norm_late"]
            stats.columns["grad_spread_late"] = late_norms.std(axis=0) / np.where(
                mean > 0, mean, 1.0
            )
    return stats, seconds


def _target_gradients(
    store: ResultStore,
    model: PeftModel,
    target_encoded: list[Encoded],
    target_id: str,
    pad: int,
    adapters: Sequence[str],
    weight_of: dict[str, str],
    cfg: SelectConfig,
) -> tuple[dict[str, Callable[..., dict[str, torch.Tensor]]], np.ndarray]:
    """Per adapter: a lazy mean target gradient, and its norm (cached), shape (A, 1).

    The target's mean gradient R (one (out, in) matrix per LoRA linear) is only needed for
    shards whose inner products are not cached; its norm is needed for every cosine and is
    saved beside them, so re-ranking a cached pool (another ``--k``) runs no backward pass.
    """
    from dataplan.compute.example_stats import mean_gradient

    computed: dict[str, dict[str, torch.Tensor]] = {}
    references: dict[str, Callable[..., dict[str, torch.Tensor]]] = {}
    norms = []
    for a in adapters:

        def reference(a: str = a) -> dict[str, torch.Tensor]:
            if a not in computed:
                computed[a] = mean_gradient(
                    model, target_encoded, pad, a, batch_size=cfg.stats_batch_size
                )
            return computed[a]

        references[a] = reference
        cache = ShardCache(
            store, f"target-{weight_of[a]}-{target_id}", [range(len(target_encoded))]
        )
        cached = cache.get(0)
        if cached is None:
            norm = float(sum(g.pow(2).sum() for g in reference().values()) ** 0.5)
            cached = cache.put(0, {"norm": np.asarray([norm], dtype=np.float64)})
        norms.append(cached["norm"])
    return references, np.stack(norms)


__all__ = ["score_pool"]

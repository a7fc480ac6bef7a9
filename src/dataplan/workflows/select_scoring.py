"""Model-based scores of ``dataplan select``: proxy losses, and ensemble gradient statistics.

Each pass over the pool is cut into shards (``cfg.shard_size`` examples); every shard's arrays are
saved in the run folder as ``shards/<array>-<size>-<i>.safetensors`` (start/stop recorded
inside), so a crashed run resumes shard by shard, and ``torchrun`` ranks share the shards.
Proxy losses are named by method (``loss-…``, ``ifd-…``); gradient statistics by what they are
of — ``sq-<adapter weights>`` (per-example squared norms), ``inner-<adapter weights>-<target>``
(inner products with a target's mean gradient; ``target-…`` holds that gradient's norm),
``sum-<member weights>`` (the classic SNR's norm of the members' sum) — so every method that
reads an adapter shares its pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.compute.distributed import local_device, run_sharded, shard_ranges, world
from dataplan.data.formatting import Encoded, PromptFormatter, encode_examples
from dataplan.data.loading import Example
from dataplan.digests import file_digest, json_digest
from dataplan.io import atomic_path
from dataplan.maths import selection as sel
from dataplan.workflows.run_folder import RunFolder


def _shard_store(run: RunFolder, name: str, shards: list[range]):
    folder = run.file("shards")

    def path(i: int) -> Path:
        return folder / f"{name}-{len(shards[0])}-{i:05d}.safetensors"

    def load(i: int) -> dict[str, np.ndarray] | None:
        from safetensors.numpy import load_file

        p = path(i)
        if not p.exists():
            return None
        arrays = load_file(str(p))
        bounds = arrays.pop("_bounds")
        if (int(bounds[0]), int(bounds[1])) != (shards[i].start, shards[i].stop):
            return None
        return arrays

    def save(i: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        bounds = np.asarray([shards[i].start, shards[i].stop], dtype=np.int64)
        with atomic_path(path(i)) as tmp:
            save_file(
                {**{k: np.ascontiguousarray(v) for k, v in arrays.items()}, "_bounds": bounds},
                str(tmp),
            )
        return arrays

    return load, save


def _unconditioned_prefix(formatter: PromptFormatter, tokenizer) -> tuple[int, ...]:
    """Context for PPL(answer): the prompt template around an empty prompt (BOS/EOS if none)."""
    prefix = tuple(formatter.prompt_ids(""))
    if prefix:
        return prefix
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return (int(start),)


def score_pool(
    cfg, run: RunFolder, pool: list[Example], target: list[Example] | None, loaded=None
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float], list[str]]:
    """``(scores, extra columns, seconds per stage, notes)`` for a model-based method."""

    rank, world_size = world()
    if loaded is None:
        loaded = cfg.spec.load(device=local_device(cfg.device))
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    encoded = encode_examples(formatter, pool)
    pad = loaded.tokenizer.pad_token_id
    shards = shard_ranges(len(pool), cfg.shard_size, world_size)
    progress = cfg.progress and rank == 0
    if cfg.method in ("loss", "ifd"):
        return _loss_scores(cfg, run, loaded, formatter, encoded, pad, shards, progress)
    target_encoded = encode_examples(formatter, target) if target else None
    target_id = json_digest([[e.prompt_ids, e.answer_ids] for e in target_encoded or []])
    return _gradient_scores(
        cfg, run, loaded, formatter, pool, encoded, target_encoded, target_id, pad, shards, progress
    )


def _loss_scores(cfg, run, loaded, formatter, encoded, pad, shards, progress):
    from dataplan.compute.example_stats import answer_losses

    model = loaded.model
    prefix = _unconditioned_prefix(formatter, loaded.tokenizer)
    load, save = _shard_store(run, cfg.method, shards)

    def work(i: int, r: range) -> dict[str, np.ndarray]:
        enc = [encoded[j] for j in r]
        out = {
            "loss": answer_losses(
                model,
                enc,
                pad,
                batch_size=cfg.loss_batch_size,
                progress=progress,
                desc=f"losses (shard {i + 1}/{len(shards)})",
            )
        }
        if cfg.method == "ifd":
            bare = [Encoded(prefix, e.answer_ids, e.end_ids) for e in enc]
            out["loss_unconditioned"] = answer_losses(
                model, bare, pad, batch_size=cfg.loss_batch_size, progress=False
            )
        return save(i, out)

    start = time.perf_counter()
    parts = run_sharded(shards, work, cached=load)
    seconds = {"scoring": round(time.perf_counter() - start, 3)}
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    if cfg.method == "loss":
        return columns["loss"], columns, seconds, []
    scores = sel.ifd(columns["loss"], columns["loss_unconditioned"])
    return scores, columns, seconds, []


def _gradient_scores(
    cfg, run, loaded, formatter, pool, encoded, target_encoded, target_id, pad, shards, progress
):
    from dataplan.compute.example_stats import gradient_stats
    from dataplan.training.ensemble import adapter_name, load_ensemble, train_ensemble

    settings = cfg.ensemble
    seconds: dict[str, float] = {}
    notes: list[str] = []
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
    members, n_cp = settings.members, len(settings.checkpoints)
    late = [adapter_name(m, n_cp - 1) for m in range(members)]
    early = [adapter_name(m, 0) for m in range(members)]
    groups: dict[str, list[str]] = {}
    if cfg.method == "gsnr" and cfg.snr_form == "classic":
        adapters, groups = late, {"late": late}
    elif cfg.method == "gsnr":
        adapters = early + late
    elif cfg.method == "gradnorm":
        adapters = late
    else:  # gradsim: every member and checkpoint, LESS-style
        adapters = [adapter_name(m, c) for m in range(members) for c in range(n_cp)]
    model = load_ensemble(loaded.model, dirs)
    try:
        # Statistics are cached per adapter — named by its weights' digest, so a retrained
        # member invalidates — not per method: methods that read the same adapters share
        # passes (gradnorm reuses gsnr's late norms; gradsim's pass, which yields every
        # member's and checkpoint's norms with its inner products, serves both).
        weight_of = {
            adapter_name(m, c): file_digest(dirs[m][c] / "adapter_model.safetensors")[:12]
            for m in range(members)
            for c in range(n_cp)
        }
        references: dict[str, Any] = {}
        target_norm = None
        if cfg.method == "gradsim":
            start = time.perf_counter()
            references, target_norm = _target_gradients(
                run, model, target_encoded, target_id, pad, adapters, weight_of, cfg
            )
            # The target's gradients themselves are computed lazily, inside the scoring of
            # the first shard that needs them: their time then counts under "scoring".
            seconds["target_gradients"] = round(time.perf_counter() - start, 3)
        stores = {("sq", a): _shard_store(run, f"sq-{weight_of[a]}", shards) for a in adapters}
        if references:
            for a in adapters:
                name = f"inner-{weight_of[a]}-{target_id}"
                stores[("inner", a)] = _shard_store(run, name, shards)
        if groups:
            group_id = json_digest([weight_of[a] for a in groups["late"]])
            stores[("sum", "late")] = _shard_store(run, f"sum-{group_id}", shards)

        def assemble(found: dict) -> dict[str, np.ndarray]:
            out = {"sq_norms": np.stack([found[("sq", a)]["v"] for a in adapters])}
            if references:
                out["inner"] = np.stack([found[("inner", a)]["v"] for a in adapters])
            if groups:
                out["sq_norm_of_sum"] = found[("sum", "late")]["v"][None, :]
            return out

        def load(i: int) -> dict[str, np.ndarray] | None:
            found = {key: store[0](i) for key, store in stores.items()}
            return None if any(v is None for v in found.values()) else assemble(found)

        def work(i: int, r: range) -> dict[str, np.ndarray]:
            found = {key: store[0](i) for key, store in stores.items()}
            missing = {key for key, v in found.items() if v is None}
            need_sum = ("sum", "late") in missing
            need = [
                a
                for a in adapters
                if ("sq", a) in missing
                or ("inner", a) in missing
                or (need_sum and a in groups["late"])
            ]
            stats = gradient_stats(
                model,
                [encoded[j] for j in r],
                pad,
                need,
                references={a: references[a]() for a in need if a in references},
                sum_groups=groups if need_sum else None,
                batch_size=cfg.stats_batch_size,
                progress=progress,
            )
            for a in need:
                found[("sq", a)] = stores[("sq", a)][1](i, {"v": stats.sq_norms[a]})
                if ("inner", a) in stores:
                    found[("inner", a)] = stores[("inner", a)][1](i, {"v": stats.inner[a]})
            if need_sum:
                found[("sum", "late")] = stores[("sum", "late")][1](
                    i, {"v": stats.sq_norm_of_sum["late"]}
                )
            return assemble(found)

        start = time.perf_counter()
        parts = run_sharded(shards, work, cached=load)
        seconds["scoring"] = round(time.perf_counter() - start, 3)
    finally:
        loaded.model = model.unload()
        loaded.model.eval()
    arrays = {key: np.concatenate([p[key] for p in parts], axis=1) for key in parts[0]}
    norms = np.sqrt(np.clip(arrays["sq_norms"], 0.0, None))  # (A, N)
    row = {a: i for i, a in enumerate(adapters)}
    columns: dict[str, np.ndarray] = {}
    late_norms = norms[[row[a] for a in late]]
    columns["grad_norm_late"] = late_norms.mean(axis=0)
    if members > 1:
        columns["grad_spread_late"] = late_norms.std(axis=0) / np.where(
            columns["grad_norm_late"] > 0, columns["grad_norm_late"], 1.0
        )
    if cfg.method == "gsnr" and cfg.snr_form in ("default", "shrinkage"):
        early_norms = norms[[row[a] for a in early]]
        columns["grad_norm_early"] = early_norms.mean(axis=0)
        columns["grad_shrinkage"] = sel.gsnr_shrinkage(early_norms, late_norms)
        if cfg.snr_form == "shrinkage":
            scores = columns["grad_shrinkage"]
        else:
            scores = sel.gsnr_default(early_norms, late_norms, eps=cfg.snr_eps)
    elif cfg.method == "gsnr":
        scores = sel.gsnr_classic(
            arrays["sq_norms"].sum(axis=0), arrays["sq_norm_of_sum"][0], members
        )
        notes.append("classic SNR: members share one adapter initialisation (seed)")
    elif cfg.method == "gradnorm":
        scores = columns["grad_norm_late"]
    else:
        cos = sel.cosine_scores(arrays["inner"], norms, target_norm)
        scores = cos.mean(axis=0)
    return scores, columns, seconds, notes


def _target_gradients(run, model, target_encoded, target_id, pad, adapters, weight_of, cfg):
    """Per adapter: a lazy mean target gradient, and its norm (cached), shape (A, 1).

    The target's mean gradient R (one (out, in) matrix per LoRA linear) is only needed for
    shards whose inner products are not cached; its norm is needed for every cosine and is
    saved beside them, so re-ranking a cached pool (another ``--k``) runs no backward pass.
    """
    from dataplan.compute.example_stats import mean_gradient

    computed: dict[str, Any] = {}
    references = {}
    norms = []
    for a in adapters:

        def reference(a: str = a) -> Any:
            if a not in computed:
                computed[a] = mean_gradient(
                    model, target_encoded, pad, a, batch_size=cfg.stats_batch_size
                )
            return computed[a]

        references[a] = reference
        load, save = _shard_store(
            run, f"target-{weight_of[a]}-{target_id}", [range(len(target_encoded))]
        )
        cached = load(0)
        if cached is None:
            norm = float(sum(g.pow(2).sum() for g in reference().values()) ** 0.5)
            cached = save(0, {"norm": np.asarray([norm], dtype=np.float64)})
        norms.append(cached["norm"])
    return references, np.stack(norms)


__all__ = ["score_pool"]

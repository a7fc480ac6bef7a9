"""Per-example LoRA gradients: dataplan's batched hook path vs the paper's one-at-a-time loop.

Built-in model (SmolLM2-135M-Instruct), 32 labelled low-confidence-sized examples of the demo
task, LoRA r 64 / alpha 32 on every attention and MLP projection, fresh adapter (seed 0). The
reference is the authors' procedure: one example at a time, full logits, ``backward`` into
``.grad``, every adapter gradient (A and B) flattened. Target: at least 2x faster with the same
cosines. Each variant runs in its own process (peak memory is its own).

    python benchmarks/bench_gradients.py [--threads 2] [--n 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, measure, save


def variant(
    phase: str, state=None, *, kind: str, n: int, batch_size: int = 32, shortcut: bool = True
):
    if phase == "setup":
        from dataplan.data.formatting import PromptFormatter
        from dataplan.models.loading import load_model
        from dataplan.models.lora import LoraSettings, attach_lora
        from dataplan.tasks.registry import load_task

        loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
        fmt = PromptFormatter(loaded.tokenizer)
        rng = np.random.default_rng(0)
        examples = load_task("demo")
        chosen = [examples[i] for i in sorted(rng.choice(len(examples), size=n, replace=False))]
        encoded = [fmt.encode(e.prompt, e.answer) for e in chosen]
        model = attach_lora(loaded.model, LoraSettings(seed=0))
        return model, encoded, loaded.tokenizer.pad_token_id
    model, encoded, pad_id = state
    from dataplan.compute.gradients import gradient_gram, gradient_gram_reference

    if kind == "reference":
        gram = gradient_gram_reference(model, encoded)
    else:
        gram = gradient_gram(
            model,
            encoded,
            pad_id,
            batch_size=batch_size,
            fresh_adapter_shortcut=shortcut,
            progress=False,
        )
    return gram.numpy().tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    from dataplan.maths.similarity import cosine_from_gram, median_pairwise

    variants = {
        "paper loop (batch 1, full logits, A+B .grad)": dict(kind="reference"),
        "dataplan, batch 32, LoRA-module hooks": dict(kind="fast", batch_size=32, shortcut=False),
        "dataplan, batch 32, fresh-adapter shortcut": dict(kind="fast", batch_size=32),
        "dataplan, batch 8 (buffered), shortcut": dict(kind="fast", batch_size=8),
    }
    rows = {}
    for label, kw in variants.items():
        t = time.perf_counter()
        res = measure(variant, threads=args.threads, n=args.n, **kw)
        res["wall_seconds"] = time.perf_counter() - t
        rows[label] = res
    ref_label = next(iter(rows))
    ref_cos = cosine_from_gram(np.array(rows[ref_label]["output"]))
    print(
        f"{'variant':48s} {'seconds':>8s} {'speed-up':>8s} {'peak MB':>8s} {'max|Δcos|':>10s} {'CoS-Low':>8s}"
    )
    summary = {}
    for label, res in rows.items():
        cos = cosine_from_gram(np.array(res["output"]))
        speedup = rows[ref_label]["seconds"] / res["seconds"]
        diff = float(np.abs(cos - ref_cos).max())
        summary[label] = {
            "seconds": res["seconds"],
            "speedup_vs_paper_loop": speedup,
            "peak_rss_mb": res["peak_rss_mb"],
            "rss_after_setup_mb": res["rss_after_setup_mb"],
            "max_abs_cosine_diff": diff,
            "coslow": median_pairwise(cos),
        }
        print(
            f"{label:48s} {res['seconds']:8.2f} {speedup:8.2f}x {res['peak_rss_mb']:8.0f} {diff:10.2e} {median_pairwise(cos):8.4f}"
        )
    path = save(
        "gradients",
        {
            "benchmark": "per-example LoRA gradients",
            "n": args.n,
            "threads": args.threads,
            "machine": machine(),
            "results": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

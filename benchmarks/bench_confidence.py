"""Pool confidence: batched greedy generation vs batch-of-one generation (the authors' setting).

Built-in model, 256 prompts of the demo task, up to 30 new tokens, greedy. Target: at least 4x
faster. Each variant runs in its own process (peak memory is its own).

    python benchmarks/bench_confidence.py [--threads 2] [--n 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, measure, save


def variant(phase: str, state=None, *, n: int, batch_size: int):
    if phase == "setup":
        from dataplan.data.formatting import PromptFormatter
        from dataplan.models.loading import load_model
        from dataplan.tasks.registry import load_task

        loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
        fmt = PromptFormatter(loaded.tokenizer)
        examples = load_task("demo")[:n]
        return loaded, [fmt.prompt_ids(e.prompt) for e in examples]
    loaded, prompt_ids = state
    from dataplan.compute.generation import greedy_answers

    res = greedy_answers(
        loaded.model, loaded.tokenizer, prompt_ids, batch_size=batch_size, progress=False
    )
    return {"confidence": res.confidence.tolist(), "generated": res.generated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    variants = {"batch of one": 1, "batched, 32": 32, "batched, 64": 64}
    rows = {}
    for label, bs in variants.items():
        t = time.perf_counter()
        rows[label] = measure(variant, threads=args.threads, n=args.n, batch_size=bs)
        rows[label]["wall_seconds"] = time.perf_counter() - t
    ref = rows["batch of one"]
    ref_conf = np.array(ref["output"]["confidence"])
    print(
        f"{'variant':16s} {'seconds':>8s} {'ex/s':>7s} {'speed-up':>8s} {'peak MB':>8s} {'max|Δconf|':>10s} {'same answers':>12s}"
    )
    summary = {}
    for label, res in rows.items():
        conf = np.array(res["output"]["confidence"])
        same = float(
            np.mean(
                [
                    a == b
                    for a, b in zip(
                        res["output"]["generated"], ref["output"]["generated"], strict=True
                    )
                ]
            )
        )
        speedup = ref["seconds"] / res["seconds"]
        diff = float(np.abs(conf - ref_conf).max())
        summary[label] = {
            "seconds": res["seconds"],
            "examples_per_second": args.n / res["seconds"],
            "speedup_vs_batch_of_one": speedup,
            "peak_rss_mb": res["peak_rss_mb"],
            "max_abs_confidence_diff": diff,
            "share_identical_answers": same,
        }
        print(
            f"{label:16s} {res['seconds']:8.1f} {args.n / res['seconds']:7.2f} {speedup:8.2f}x {res['peak_rss_mb']:8.0f} {diff:10.2e} {same:12.1%}"
        )
    path = save(
        "confidence",
        {
            "benchmark": "pool confidence",
            "n": args.n,
            "threads": args.threads,
            "machine": machine(),
            "results": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

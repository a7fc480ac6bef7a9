"""Scale-out on this machine, side by side in one run: torchrun ranks and Ray workers.

1. **torchrun, pool confidence** (the pass `estimate` shards): greedy answers and confidence of
   ``--n`` prompts of the demo task with the built-in model, through
   :func:`dataplan.compute.distributed.sharded_pass` (shards of ``--shard-size``), run by
   ``torchrun --nproc-per-node 1`` and ``2``, one torch thread per rank. Timed from after the
   model is loaded to the gathered result, on rank 0; the two results must agree. Target: 2
   ranks ≥ 1.7× one.
2. **Ray, curve points**: ``--points`` curve points of arithmetic_2_digit_addition (a budget of
   8 examples, seeds 0..points−1, no zero-shot point, the curve's fine-tuning settings with ``--steps`` steps, 20
   test prompts), ``--executor local`` with one thread against ``--executor ray`` with 2 workers
   of one CPU each. Timed end to end (Ray's start and each worker's model loading included: it
   is what a user waits for). The two curves must agree. Target: ≥ 1.6×.
3. **Growth with the pool** (torchrun, 1 rank): the confidence pass at 1×, 2×, 4× ``--n``
   (linear if the time per prompt stays flat).

    python benchmarks/bench_scaleout.py [--n 64] [--points 4] [--steps 6] [--parts 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, save

HERE = Path(__file__).resolve()


def confidence_worker(n: int, shard_size: int) -> None:
    """Run under torchrun: the sharded confidence pass; rank 0 prints seconds and results."""
    import torch

    torch.set_num_threads(1)
    from dataplan.compute.distributed import barrier, is_main, sharded_pass, world
    from dataplan.compute.generation import greedy_answers
    from dataplan.data.formatting import PromptFormatter
    from dataplan.models.loading import load_model
    from dataplan.store import ResultStore
    from dataplan.tasks.registry import load_task

    rank, size = world()
    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    fmt = PromptFormatter(loaded.tokenizer)
    pool = load_task("demo")
    examples = [pool[i % len(pool)] for i in range(n)]
    prompts = [fmt.prompt_ids(e.prompt) for e in examples]

    def shard(_: int, r: range) -> dict:
        res = greedy_answers(
            loaded.model, loaded.tokenizer, [prompts[i] for i in r], batch_size=16, progress=False
        )
        return {"confidence": res.confidence, "generated": res.generated}

    with tempfile.TemporaryDirectory() as tmp:  # a fresh store: nothing cached
        store = ResultStore(Path(tmp) / f"rank{rank}")
        barrier()  # every rank starts the clock together
        start = time.perf_counter()
        out = sharded_pass(n, shard, store=store, name="confidence", shard_size=shard_size)
        seconds = time.perf_counter() - start
    if is_main():
        print(
            json.dumps(
                {
                    "ranks": size,
                    "seconds": seconds,
                    "confidence": out["confidence"].tolist(),
                    "generated": out["generated"],
                }
            )
        )


def _torchrun(nproc: int, n: int, shard_size: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(HERE),
        "--worker",
        "--prompts",  # not --n: torchrun's parser takes it for an abbreviation of its own
        str(n),
        "--shard-size",
        str(shard_size),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torchrun_part(n: int, shard_size: int) -> dict:
    one = _torchrun(1, n, shard_size)
    two = _torchrun(2, n, shard_size)
    import numpy as np

    diff = float(np.max(np.abs(np.asarray(one["confidence"]) - np.asarray(two["confidence"]))))
    result = {
        "prompts": n,
        "shard_size": shard_size,
        "seconds_1_rank": round(one["seconds"], 2),
        "seconds_2_ranks": round(two["seconds"], 2),
        "speedup": round(one["seconds"] / two["seconds"], 3),
        "max_abs_confidence_diff": diff,
        "same_answers": one["generated"] == two["generated"],
    }
    print(f"torchrun confidence: {result}", flush=True)
    return result


def growth_part(n: int, shard_size: int) -> dict:
    rows = []
    for factor in (1, 2, 4):
        r = _torchrun(1, n * factor, shard_size)
        rows.append(
            {
                "prompts": n * factor,
                "seconds": round(r["seconds"], 2),
                "seconds_per_prompt": round(r["seconds"] / (n * factor), 4),
            }
        )
        print(f"growth: {rows[-1]}", flush=True)
    return {
        "rows": rows,
        "ratio_4x_to_1x_per_prompt": rows[-1]["seconds_per_prompt"] / rows[0]["seconds_per_prompt"],
    }


def ray_part(points: int, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    seeds = ",".join(str(s) for s in range(points))
    times, curves = {}, {}
    for executor in ("local", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "dataplan",
                "curve",
                "--task",
                "arithmetic_2_digit_addition",
                "--budgets",
                "8",  # every point a fine-tune: `points` equal jobs
                "--seeds",
                seeds,
                "--min-steps",
                str(steps),
                "--max-steps",
                str(steps),
                "--max-test",
                "20",
                "--cache",
                f"{tmp}/cache",
                "--out-dir",
                f"{tmp}/out",
                "--executor",
                executor,
                "--json",
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
            times[executor] = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            curves[executor] = json.loads(proc.stdout)["curve"]
        print(f"ray part, {executor}: {times[executor]:.1f} s", flush=True)
    result = {
        "points": points,
        "steps": steps,
        "seconds_local_1_thread": round(times["local"], 2),
        "seconds_ray_2_workers": round(times["ray"], 2),
        "speedup": round(times["local"] / times["ray"], 3),
        "same_curve": curves["local"] == curves["ray"],
    }
    print(f"ray curve points: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", "--n", dest="n", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--parts", default="1,2,3")
    args = parser.parse_args()
    if args.worker:
        confidence_worker(args.n, args.shard_size)
        return
    parts = args.parts.split(",")
    # Parts run separately keep the others' results (each with the settings it ran with).
    previous = RESULTS / "scaleout.json"
    out: dict = json.loads(previous.read_text()) if previous.exists() else {}
    out["machine"] = machine()
    settings = {k: v for k, v in vars(args).items() if k != "worker"}
    runs = {
        "1": ("torchrun_confidence", lambda: torchrun_part(args.n, args.shard_size)),
        "2": ("ray_curve_points", lambda: ray_part(args.points, args.steps)),
        "3": ("confidence_growth", lambda: growth_part(args.n, args.shard_size)),
    }
    for part in parts:
        key, run = runs[part]
        out[key] = {**run(), "settings": settings}
    save("scaleout", out)


if __name__ == "__main__":
    main()

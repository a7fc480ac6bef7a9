"""Peak memory of the per-example gradient pass (CoS-Low) against a plain LoRA step and the
CoS-Low authors' loop, side by side in one run.

The CoS-Low authors' own 32 labelled Circa examples (~300-token prompts; the test fixture
``tests/fixtures/dataefficiency/low_conf_examples_annotated.json``), the built-in model, LoRA r 64
/ alpha 32 on every projection, fresh adapter (seed 0), prompt as given (no chat template).
Each variant runs in its own process, so its peak resident memory (``ru_maxrss``) is its own;
``rss after setup`` is the model and data alone.

- **plain LoRA forward+backward**: the batches of 8 a fine-tune would take, mean answer loss on
  full logits, ``backward`` into the adapter's ``.grad`` — the yardstick (issue target: peak ≤
  this + 1 GB);
- **dataplan, batch 8** (what ``coslow`` / ``estimate`` run) and **batch 32**;
- **the authors' loop** (one example at a time, full logits, every A and B gradient flattened
  and kept): :func:`dataplan.compute.gradients.gradient_gram_reference`.

    python benchmarks/bench_memory.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import machine, measure, save

FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "tests/fixtures/dataefficiency/low_conf_examples_annotated.json"
)


def variant(
    phase: str, state=None, *, kind: str, batch_size: int = 8, max_memory: str | None = None
):
    if phase == "setup":
        from dataplan.data.formatting import PromptFormatter
        from dataplan.models.loading import load_model
        from dataplan.models.lora import LoraSettings, attach_lora

        rows = json.loads(FIXTURE.read_text())
        loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
        fmt = PromptFormatter(loaded.tokenizer, use_chat_template=False)
        encoded = [fmt.encode(r["input_text"], str(r["ground_truth"])) for r in rows]
        model = attach_lora(loaded.model, LoraSettings(seed=0))
        return model, encoded, loaded.tokenizer.pad_token_id
    model, encoded, pad_id = state
    from dataplan.compute.gradients import gradient_gram, gradient_gram_reference

    if kind == "plain":
        from dataplan.compute.batching import pad_batch
        from dataplan.training.losses import token_losses

        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            ids, mask = pad_batch([e.input_ids(with_end=True) for e in batch], pad_id, side="right")
            labels, _ = pad_batch([e.labels(with_end=True) for e in batch], -100, side="right")
            losses, lmask = token_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
            (losses.sum() / lmask.sum()).backward()
        model.zero_grad(set_to_none=True)
        return {"tokens": int(sum(len(e.input_ids(with_end=True)) for e in encoded))}
    if kind == "reference":
        gram = gradient_gram_reference(model, encoded)
        return {"gram_trace": float(gram.diagonal().sum())}
    import logging

    from dataplan.compute.memory import parse_memory

    plans: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: plans.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("dataplan.compute.gradients").addHandler(handler)
    logging.getLogger("dataplan.compute.gradients").setLevel(logging.INFO)
    gram = gradient_gram(
        model,
        encoded,
        pad_id,
        batch_size=batch_size,
        max_memory=parse_memory(max_memory) if max_memory else None,
        progress=False,
    )
    return {"gram_trace": float(gram.diagonal().sum()), "plan": plans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    variants = {
        "plain LoRA forward+backward, batch 8": dict(kind="plain", batch_size=8),
        "dataplan, batch 8 (default)": dict(kind="fast", batch_size=8),
        "dataplan, batch 32": dict(kind="fast", batch_size=32),
        "dataplan --max-memory 4GB (batches ≤ 32)": dict(
            kind="fast", batch_size=32, max_memory="4GB"
        ),
        "dataplan --max-memory 3GB (batches ≤ 32)": dict(
            kind="fast", batch_size=32, max_memory="3GB"
        ),
        "the authors' loop (batch 1, full logits, A+B flattened)": dict(kind="reference"),
    }
    results = {}
    for label, kw in variants.items():
        res = measure(variant, threads=args.threads, **kw)
        results[label] = {
            "seconds": round(res["seconds"], 2),
            "peak_rss_mb": round(res["peak_rss_mb"]),
            "rss_after_setup_mb": round(res["rss_after_setup_mb"]),
            "output": res["output"],
        }
        print(f"{label:58s} {res['seconds']:7.1f} s  peak {res['peak_rss_mb']:7.0f} MB", flush=True)
    save("memory", {"machine": machine(), "threads": args.threads, "results": results})


if __name__ == "__main__":
    main()

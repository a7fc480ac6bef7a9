"""GPU paths: run where a CUDA device exists, skipped elsewhere (this CPU-only CI skips them).

What they guard: device placement under ``auto``, bf16 autocast in training, the evaluation
and per-example passes on CUDA tensors, and the same numbers as the CPU to bf16 tolerance.
"""

from __future__ import annotations

import json

import pytest
import torch

from dataplan.training.core import trainer_arguments
from dataplan.training.settings import TrainSettings

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_training_precision_follows_the_weights(tmp_path):
    """On the CPU, training runs in the model's precision; the GPU choices are tested below."""
    args = trainer_arguments(TrainSettings(), 2, 4, str(tmp_path), weights_dtype=torch.bfloat16)
    if torch.cuda.is_available():
        assert args.bf16 and not args.fp16 and args.dataloader_pin_memory
    else:
        assert not args.bf16 and not args.fp16 and not args.dataloader_pin_memory and args.use_cpu


@cuda
def test_fp16_autocast_only_for_an_adapter(tmp_path):
    lora = trainer_arguments(TrainSettings(), 2, 4, str(tmp_path), weights_dtype=torch.float16)
    full = trainer_arguments(
        TrainSettings(method="full"), 2, 4, str(tmp_path), weights_dtype=torch.float16
    )
    assert lora.fp16 and not full.fp16


@cuda
def test_curve_point_on_the_gpu_matches_the_cpu(tiny_model_dir, tmp_path, capsys):
    from test_cli import run_main

    words = ["red", "blue", "green", "cat"]
    rows = [
        {"id": f"e{i}", "prompt": f"Colour {i}?", "answer": words[i % 4], "choices": words}
        for i in range(40)
    ]
    data = tmp_path / "task.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {}
    for device in ("cpu", "cuda"):
        code, out, err = run_main(
            [
                "curve",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(data),
                "--budgets",
                "0,8",
                "--seeds",
                "0",
                "--device",
                device,
                "--dtype",
                "float32",
                "--max-steps",
                "4",
                "--max-test",
                "8",
                "--cache",
                str(tmp_path / f"cache-{device}"),
                "--out-dir",
                str(tmp_path / f"out-{device}"),
                "--json",
            ],
            capsys,
        )
        assert code == 0, err
        results[device] = json.loads(out)
    gpu, cpu = results["cuda"]["curve"]["0"], results["cpu"]["curve"]["0"]
    for metric in cpu:  # greedy answers may flip on a near-tie: one of 8 test prompts at most
        assert gpu[metric] == pytest.approx(cpu[metric], abs=1 / 8 + 1e-9), metric
    cached = list((tmp_path / "cache-cuda").glob("*.json"))
    assert cached and all(json.loads(p.read_text())["settings"]["device"] == "cuda" for p in cached)


@cuda
def test_bf16_estimate_runs_on_the_gpu(tiny_model_dir, tmp_path):
    from dataplan.workflows.estimate import EstimateConfig, estimate

    words = ["red", "blue", "green", "cat"]
    data = tmp_path / "pool.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"e{i}", "prompt": f"Say {words[i % 4]} {i}", "answer": words[i % 4]})
            + "\n"
            for i in range(40)
        )
    )
    res = estimate(
        EstimateConfig(
            model=str(tiny_model_dir),
            data=str(data),
            device="cuda",
            dtype="bfloat16",
            n_labeled=8,
            low_fraction=0.25,
            max_new_tokens=3,
            lora_r=4,
            run_dir=str(tmp_path / "run"),
            progress=False,
        )
    )
    assert -1.0 <= res.cos_low <= 1.0

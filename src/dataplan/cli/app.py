"""``dataplan``: plan the data of a language-model fine-tune.

Every command prints a readable table, or with ``--json`` exactly one JSON object on stdout.
Errors in the user's input exit with code 2 and one line on stderr naming the file, line and
field; logging and progress bars go to stderr.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from dataplan.cli.output import (
    console,
    emit_json,
    err_console,
    fmt,
    forecast_rows,
    key_value_table,
)
from dataplan.errors import ConfigError, DataplanError

app = typer.Typer(
    name="dataplan",
    help="How much data does a fine-tune need, which examples, how weighted, and how sure are we?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Options shared by the commands that load a model (declared once).
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Built-in name (smollm2-135m-instruct), local folder or hub id."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA, else CPU), cpu, cuda, cuda:1, …")]
DtypeOpt = Annotated[
    str, typer.Option(help="auto (bf16 on CUDA, else fp32), float32, bfloat16, float16.")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow the model's own code (off by default).")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")
]
PromptFieldOpt = Annotated[str, typer.Option(help="Field holding the prompt.")]
AnswerFieldOpt = Annotated[str, typer.Option(help="Field holding the answer.")]
IdFieldOpt = Annotated[
    str, typer.Option(help="Field holding an example id (optional in the data).")
]
ChatOpt = Annotated[
    bool,
    typer.Option(
        "--chat-template/--no-chat-template",
        help="Apply the model's chat template when it has one.",
    ),
]
SystemOpt = Annotated[
    str | None, typer.Option(help="System message (default: the template's own).")
]
LoraROpt = Annotated[int, typer.Option(help="LoRA rank.")]
LoraAlphaOpt = Annotated[float, typer.Option(help="LoRA alpha.")]
LoraTargetsOpt = Annotated[str, typer.Option(help="'all-linear' or comma-separated module names.")]
AdapterOpt = Annotated[
    Path | None, typer.Option(help="Existing PEFT adapter folder instead of a fresh adapter.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")]
IntervalOpt = Annotated[float, typer.Option(help="Coverage of the reported intervals.")]


def _opt_str(path: Path | None) -> str | None:
    """An optional path option as the string the workflow configs hold (they stay JSON-ready)."""
    return None if path is None else str(path)


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None


@app.command()
def estimate(
    model: ModelOpt = "smollm2-135m-instruct",
    data: Annotated[
        Path | None,
        typer.Option(
            help="Task file: JSONL, CSV, Parquet, BIG-bench task.json or a datasets folder."
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="A built-in task instead of --data (e.g. demo).")
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(
            help="Normalised target τ in (0, 1): share of the way from zero-shot to the ceiling."
        ),
    ] = None,
    target_accuracy: Annotated[
        float | None,
        typer.Option(help="Raw target accuracy, converted through zero-shot accuracy and ceiling."),
    ] = None,
    zero_shot_accuracy: Annotated[
        float | None,
        typer.Option(help="Zero-shot accuracy (default: measured on a labelled pool)."),
    ] = None,
    ceiling: Annotated[
        float, typer.Option(help="Ceiling H (human-level score) for --target-accuracy.")
    ] = 1.0,
    calibration: Annotated[
        str | None,
        typer.Option(help="Calibration name or JSON file (default: the model's, if built in)."),
    ] = None,
    coef: Annotated[
        float | None, typer.Option(help="Calibration slope c (with --intercept).")
    ] = None,
    intercept: Annotated[
        float | None, typer.Option(help="Calibration intercept I (with --coef).")
    ] = None,
    n_max: Annotated[
        int | None,
        typer.Option(
            help="Budget at which the predicted curve reaches the ceiling (default: the calibration's)."
        ),
    ] = None,
    labeled: Annotated[
        Path | None,
        typer.Option(help="The labelled low-confidence examples (after --annotate-out)."),
    ] = None,
    annotate_out: Annotated[
        Path | None,
        typer.Option(help="Write the low-confidence examples to label here (unlabelled pool)."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run folder (default runs/estimate-<time>); rerun to resume."),
    ] = None,
    n_labeled: Annotated[int, typer.Option(help="Low-confidence examples to label and use.")] = 32,
    low_fraction: Annotated[
        float, typer.Option(help="Share of the pool counted as low confidence.")
    ] = 0.1,
    confidence: Annotated[
        str,
        typer.Option(
            help="Confidence measure: confidence (mean max-token probability) or perplexity."
        ),
    ] = "confidence",
    max_pool: Annotated[
        int | None,
        typer.Option(help="Use a seeded random subset of at most this many pool examples."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (recorded).")] = 0,
    adapter_seeds: Annotated[
        str,
        typer.Option(
            help="Seeds of the fresh adapters; CoS-Low is their mean, the spread is reported."
        ),
    ] = "0",
    gradient_space: Annotated[
        str,
        typer.Option(
            help="lora (the paper's fresh-adapter gradients) or frozen (seed-free: gradients of the adapted weights)."
        ),
    ] = "lora",
    random_baseline: Annotated[
        bool,
        typer.Option(
            "--random-baseline/--no-random-baseline",
            help="Also compute CoS over random pool examples.",
        ),
    ] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Longest generated answer.")] = 30,
    generation_batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 64,
    gradient_batch_size: Annotated[int, typer.Option(help="Examples per backward pass.")] = 8,
    lora_r: LoraROpt = 64,
    lora_alpha: LoraAlphaOpt = 32.0,
    lora_targets: LoraTargetsOpt = "all-linear",
    adapter: AdapterOpt = None,
    prompt_field: PromptFieldOpt = "prompt",
    answer_field: AnswerFieldOpt = "answer",
    id_field: IdFieldOpt = "id",
    split: Annotated[str | None, typer.Option(help="Split of a datasets folder.")] = None,
    chat_template: ChatOpt = True,
    system_prompt: SystemOpt = None,
    interval: IntervalOpt = 0.8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Predict a task's data efficiency and the examples needed to reach a target (CoS-Low)."""
    _setup_logging(quiet or json_out)
    from dataplan.workflows.estimate import EstimateConfig
    from dataplan.workflows.estimate import estimate as run_estimate

    cfg = EstimateConfig(
        model=model,
        data=_opt_str(data),
        task=task,
        labeled=_opt_str(labeled),
        annotate_out=_opt_str(annotate_out),
        run_dir=_opt_str(run_dir),
        prompt_field=prompt_field,
        answer_field=answer_field,
        id_field=id_field,
        split=split,
        max_pool=max_pool,
        chat_template=chat_template,
        system_prompt=system_prompt,
        confidence_measure=confidence,
        low_fraction=low_fraction,
        n_labeled=n_labeled,
        seed=seed,
        max_new_tokens=max_new_tokens,
        generation_batch_size=generation_batch_size,
        gradient_batch_size=gradient_batch_size,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_targets=lora_targets,
        adapter=_opt_str(adapter),
        adapter_seeds=_seeds(adapter_seeds),
        gradient_space=gradient_space,
        random_baseline=random_baseline,
        calibration=calibration,
        coef=coef,
        intercept=intercept,
        n_max=n_max,
        target=target,
        target_accuracy=target_accuracy,
        zero_shot_accuracy=zero_shot_accuracy,
        ceiling=ceiling,
        interval=interval,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        progress=not (quiet or json_out),
    )
    result = run_estimate(cfg)
    d = result.to_dict()
    if json_out:
        emit_json(d)
        return
    rows = [
        ("model", f"{d['model']['name']} ({d['model']['device']}, {d['model']['dtype']})"),
        ("pool", f"{d['n_pool']} examples, lowest {cfg.low_fraction:.0%} = {d['n_low']}"),
    ]
    if d["status"] == "needs_labels":
        console.print(key_value_table("dataplan estimate", rows))
        console.print(f"[yellow]{d['note']}[/yellow]")
        return
    seeds = d["cos_low_per_seed"]
    spread = f"  (adapter seeds: {', '.join(f'{s:.4f}' for s in seeds)})" if len(seeds) > 1 else ""
    b = d["baselines"]
    rows += [
        ("CoS-Low", fmt(d["cos_low"]) + spread),
        ("CoS over random examples", fmt(b["cos_random"])),
        ("mean gradient norm", fmt(b["mean_grad_norm"])),
        (
            "mean confidence (pool / low)",
            f"{fmt(b['mean_confidence_pool'])} / {fmt(b['mean_confidence_low'])}",
        ),
        ("zero-shot exact match", fmt(d["zero_shot_accuracy"], 3)),
    ]
    if d["forecast"] is not None:
        rows += forecast_rows(d["forecast"])
    rows.append(("run folder", d["run_dir"]))
    console.print(key_value_table("dataplan estimate", rows))
    if d["note"]:
        console.print(f"[yellow]note:[/yellow] {d['note']}")


@app.command()
def predict(
    cos_low: Annotated[float, typer.Option("--cos-low", help="The task's CoS-Low.")],
    target: Annotated[float | None, typer.Option(help="Normalised target τ in (0, 1).")] = None,
    target_accuracy: Annotated[
        float | None, typer.Option(help="Raw target accuracy (with --zero-shot-accuracy).")
    ] = None,
    zero_shot_accuracy: Annotated[
        float | None, typer.Option(help="Zero-shot accuracy acc₀.")
    ] = None,
    ceiling: Annotated[float, typer.Option(help="Ceiling H for --target-accuracy.")] = 1.0,
    calibration: Annotated[str | None, typer.Option(help="Calibration name or JSON file.")] = None,
    coef: Annotated[float | None, typer.Option(help="Calibration slope c.")] = None,
    intercept: Annotated[float | None, typer.Option(help="Calibration intercept I.")] = None,
    n_max: Annotated[
        int | None, typer.Option(help="Budget at which the predicted curve reaches the ceiling.")
    ] = None,
    interval: IntervalOpt = 0.8,
    json_out: JsonOpt = False,
) -> None:
    """Forecast AUC', the data-efficiency curve and the examples needed, from a CoS-Low value."""
    _setup_logging(True)
    from dataplan.calibrations import get_calibration
    from dataplan.maths.forecast import Calibration, forecast, normalise_target

    if (calibration is None) == (coef is None) or (
        calibration is not None and intercept is not None
    ):
        raise ConfigError("give --calibration NAME|FILE or --coef C --intercept I")
    for label, value in (("--cos-low", cos_low), ("--coef", coef), ("--intercept", intercept)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number")
    if n_max is not None and n_max < 2:
        raise ConfigError(f"--n-max must be at least 2, got {n_max}")
    if coef is not None:
        if intercept is None:
            raise ConfigError("--coef needs --intercept")
        cal = Calibration(name="custom", coef=coef, intercept=intercept, n_max=n_max or 5000)
    else:
        cal = get_calibration(calibration)  # type: ignore[arg-type]
    if (target is None) == (target_accuracy is None):
        raise ConfigError("give --target TAU or --target-accuracy A (with --zero-shot-accuracy)")
    if target_accuracy is not None:
        if zero_shot_accuracy is None:
            raise ConfigError("--target-accuracy needs --zero-shot-accuracy")
        try:
            target = normalise_target(target_accuracy, zero_shot_accuracy, ceiling)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    assert target is not None
    if not 0.0 < target < 1.0:
        raise ConfigError(f"the normalised target must be in (0, 1), got {target:.4f}")
    if not 0.0 < interval < 1.0:
        raise ConfigError("--interval must be in (0, 1)")
    fc = forecast(cos_low, cal, target, n_max=n_max, level=interval).to_dict()
    if json_out:
        emit_json(fc)
        return
    console.print(
        key_value_table("dataplan predict", [("CoS-Low", fmt(cos_low)), *forecast_rows(fc)])
    )


@app.command()
def auc(
    results: Annotated[
        Path,
        typer.Argument(help='Result file in the paper\'s format: {"<n>": {"<metric>": value}}.'),
    ],
    metric: Annotated[
        str | None,
        typer.Option(
            help="Metric key (default: f1 if present, else accuracy / exact_string_match_accuracy)."
        ),
    ] = None,
    human_score: Annotated[
        float | None, typer.Option(help="Human-level score H (ceiling).")
    ] = None,
    budgets: Annotated[
        str,
        typer.Option(help="Budget grid; n_max is the largest. 0 (zero-shot) is always included."),
    ] = "0,50,100,200,500,1000,2500,5000",
    json_out: JsonOpt = False,
) -> None:
    """Data efficiency (area under the normalised curve) of measured fine-tuning results."""
    _setup_logging(True)
    from dataplan.workflows.auc import auc_report

    report = auc_report(results, metric=metric, human_score=human_score, budgets=budgets)
    if json_out:
        emit_json(report)
        return
    rows = [
        ("file", str(results)),
        ("metric", report["metric"]),
        ("AUC", fmt(report["auc"])),
        ("zero-shot / ceiling", f"{fmt(report['zero_shot'])} / {fmt(report['ceiling'])}"),
        (
            "cleaned curve (n:value)",
            ", ".join(
                f"{n}:{v:.3f}" for n, v in zip(report["curve_n"], report["curve"], strict=True)
            ),
        ),
    ]
    console.print(key_value_table("dataplan auc", rows))


@app.command("coslow")
def coslow_cmd(
    labeled: Annotated[Path, typer.Option(help="Labelled examples (JSONL, CSV, Parquet, …).")],
    model: ModelOpt = "smollm2-135m-instruct",
    adapter: AdapterOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the fresh adapter's random A.")] = 0,
    lora_r: LoraROpt = 64,
    lora_alpha: LoraAlphaOpt = 32.0,
    lora_targets: LoraTargetsOpt = "all-linear",
    batch_size: Annotated[int, typer.Option(help="Examples per backward pass.")] = 8,
    prompt_field: PromptFieldOpt = "prompt",
    answer_field: AnswerFieldOpt = "answer",
    id_field: IdFieldOpt = "id",
    chat_template: ChatOpt = True,
    system_prompt: SystemOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """CoS-Low of labelled examples: the median pairwise cosine of their LoRA gradients."""
    _setup_logging(quiet or json_out)
    from dataplan.data.formatting import PromptFormatter
    from dataplan.data.loading import Fields, load_examples
    from dataplan.models.loading import load_model
    from dataplan.models.lora import LoraSettings
    from dataplan.workflows.coslow import coslow

    examples = load_examples(
        labeled, fields=Fields(prompt_field, answer_field, id_field), require_answer=True
    )
    targets = (
        lora_targets
        if lora_targets == "all-linear"
        else tuple(t.strip() for t in lora_targets.split(","))
    )
    settings = LoraSettings(r=lora_r, alpha=lora_alpha, target_modules=targets, seed=seed)
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    fmt_ = PromptFormatter(
        loaded.tokenizer, use_chat_template=chat_template, system_prompt=system_prompt
    )
    res = coslow(
        loaded,
        examples,
        lora=settings,
        adapter=_opt_str(adapter),
        formatter=fmt_,
        batch_size=batch_size,
        progress=not (quiet or json_out),
    )
    d = res.to_dict()
    if json_out:
        emit_json(d)
        return
    rows = [
        ("examples", str(len(res.ids))),
        ("adapter", res.adapter),
        ("gradient length", f"{res.n_params:,}"),
        ("CoS-Low (median pairwise cosine)", fmt(res.coslow)),
        ("mean gradient norm", fmt(float(res.grad_norms.mean()))),
    ]
    console.print(key_value_table("dataplan coslow", rows))


@app.command()
def calibrations(json_out: JsonOpt = False) -> None:
    """List the calibrations known by name."""
    from dataplan.calibrations import list_calibrations

    cals = [c.to_dict() for c in list_calibrations()]
    if json_out:
        emit_json({"calibrations": cals})
        return
    from rich.table import Table

    table = Table(title="calibrations (AUC' = c · CoS-Low + I)")
    for col in ("name", "c", "I", "n_max", "residual sd"):
        table.add_column(col)
    for c in cals:
        table.add_row(
            c["name"],
            fmt(c["coef"], 3),
            fmt(c["intercept"], 3),
            str(c["n_max"]),
            fmt(c["residual_std"], 3),
            c["source"][:60],
        )
    console.print(table)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated integers, got {text!r}") from None


@app.command()
def curve(
    model: ModelOpt = "smollm2-135m-instruct",
    task: Annotated[
        str | None, typer.Option(help="A suite task (see `dataplan tasks list`).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Labelled task file instead of --task.")] = None,
    test_data: Annotated[
        Path | None, typer.Option(help="Held-out test file (default: 300 split off --data).")
    ] = None,
    budgets: Annotated[
        str, typer.Option(help="Training-set sizes; 0 is zero-shot.")
    ] = "0,16,32,64,128,256,512,1024",
    seeds: Annotated[str, typer.Option(help="Seeds: subset order and training randomness.")] = "0",
    method: Annotated[str, typer.Option(help="lora or full fine-tuning.")] = "lora",
    learning_rate: Annotated[
        float, typer.Option(help="Peak learning rate (linear decay, 10% warm-up).")
    ] = 5e-4,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 8,
    epochs: Annotated[float, typer.Option(help="Passes over the training subset.")] = 3.0,
    min_steps: Annotated[int, typer.Option(help="Fewest optimiser steps at any budget.")] = 20,
    max_steps: Annotated[int, typer.Option(help="Most optimiser steps at any budget.")] = 300,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32.0,
    lora_targets: LoraTargetsOpt = "all-linear",
    max_test: Annotated[
        int | None, typer.Option(help="Evaluate on at most this many test examples.")
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option(help="Longest generated answer at evaluation.")
    ] = 16,
    out_dir: Annotated[
        Path | None, typer.Option(help="Where the curve files go (default runs/curve-<task>).")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Result cache (default ~/.cache/dataplan/curves); resumes from it."),
    ] = None,
    chat_template: ChatOpt = True,
    system_prompt: SystemOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure a data-efficiency curve: fine-tune at each budget, evaluate on held-out data."""
    _setup_logging(quiet or json_out)
    from dataplan.training import TrainSettings
    from dataplan.workflows.curve import METRICS, CurveConfig, measure_curve

    train = TrainSettings(
        method=method,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        min_steps=min_steps,
        max_steps=max_steps,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_targets=lora_targets,
    )
    cfg = CurveConfig(
        model=model,
        task=task,
        data=_opt_str(data),
        test_data=_opt_str(test_data),
        budgets=_ints(budgets, "--budgets"),
        seeds=_ints(seeds, "--seeds"),
        train=train,
        max_test=max_test,
        max_new_tokens=max_new_tokens,
        out_dir=_opt_str(out_dir),
        cache=_opt_str(cache),
        chat_template=chat_template,
        system_prompt=system_prompt,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        progress=not (quiet or json_out),
    )
    summary = measure_curve(cfg)
    if json_out:
        emit_json(summary)
        return
    from rich.table import Table

    table = Table(
        title=f"{summary['model']} on {summary['task']} ({summary['n_test']} test examples)"
    )
    table.add_column("n", justify="right")
    for metric in (*METRICS, "prediction_majority_share"):
        table.add_column(metric, justify="right")
    for n, row in summary["curve"].items():
        table.add_row(n, *(fmt(row.get(m), 3) for m in (*METRICS, "prediction_majority_share")))
    console.print(table)
    aucs = ", ".join(f"{k} {v:.3f}" for k, v in summary["auc"].items())
    console.print(f"AUC (n_max {summary['n_max']}): {aucs}")
    console.print(
        f"always-majority baseline: {summary['majority_accuracy']:.3f} ('{summary['majority_label']}')"
    )


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None


@app.command("select")
def select_cmd(
    data: Annotated[Path, typer.Option(help="The labelled pool to choose from.")],
    method: Annotated[
        str, typer.Option(help="gsnr, ifd, loss, gradnorm, gradsim or random.")
    ] = "gsnr",
    out: Annotated[
        Path | None, typer.Option(help="Write the chosen examples here (.jsonl or .parquet).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="The proxy: built-in name, local folder or hub id."),
    ] = None,
    fraction: Annotated[
        float | None, typer.Option(help="Keep this fraction of the pool, in (0, 1].")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", help="Keep this many examples.")] = None,
    target: Annotated[
        Path | None, typer.Option(help="gradsim: the small target set to resemble.")
    ] = None,
    scores_out: Annotated[
        Path | None, typer.Option(help="Every example's score and rank (.parquet).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the ensemble, ties and random.")] = 0,
    lowest: Annotated[
        bool, typer.Option("--lowest", help="Keep the lowest scores instead of the highest.")
    ] = False,
    balance_by: Annotated[
        str | None,
        typer.Option(
            "--balance-by",
            help="Keep the pool's share of each group in the subset, the score choosing within "
            "each: 'label' (the answer; classification pools, at least 5 examples per label on "
            "average) or 'answer-length' (the answer's length in characters, up to 5 strata). "
            "The rank column becomes the balanced rank.",
        ),
    ] = None,
    members: Annotated[
        int | None, typer.Option(help="Ensemble size M (default 3 for gsnr, else 1).")
    ] = None,
    epochs: Annotated[float, typer.Option(help="Ensemble training passes over the pool.")] = 1.0,
    checkpoints: Annotated[
        str, typer.Option(help="Fractions of training where gradients are read (early,late).")
    ] = "0.25,1.0",
    snr_form: Annotated[
        str,
        typer.Option(
            help="default: gradient shrinkage (early-late)/early over the members' late spread; "
            "shrinkage: the shrinkage alone; classic: |mean g|^2 / mean |g - mean|^2."
        ),
    ] = "default",
    learning_rate: Annotated[float, typer.Option(help="Ensemble learning rate.")] = 5e-4,
    train_batch_size: Annotated[int, typer.Option(help="Ensemble training batch size.")] = 8,
    stats_batch_size: Annotated[int, typer.Option(help="Examples per backward when scoring.")] = 8,
    shard_size: Annotated[
        int, typer.Option(help="Examples per cached shard (the unit of resume and torchrun).")
    ] = 1024,
    lora_r: LoraROpt = 8,
    lora_alpha: LoraAlphaOpt = 16.0,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run folder, shared by all methods (default runs/select-<data>)."),
    ] = None,
    prompt_field: PromptFieldOpt = "prompt",
    answer_field: AnswerFieldOpt = "answer",
    id_field: IdFieldOpt = "id",
    split: Annotated[str | None, typer.Option(help="Split of a datasets folder.")] = None,
    chat_template: ChatOpt = True,
    system_prompt: SystemOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Choose a training subset: G-SNR over a LoRA ensemble (GRADFILTERING) or a baseline.

    Works under `torchrun --nproc-per-node N -m dataplan select ...`: the scoring shards are
    split across processes.
    """
    _setup_logging(quiet or json_out)
    from dataplan.workflows.select import SelectConfig, select

    cfg = SelectConfig(
        method=method,
        data=str(data),
        model=model,
        fraction=fraction,
        k=k,
        out=_opt_str(out),
        scores_out=_opt_str(scores_out),
        target=_opt_str(target),
        seed=seed,
        lowest=lowest,
        balance_by=balance_by,
        run_dir=_opt_str(run_dir),
        prompt_field=prompt_field,
        answer_field=answer_field,
        id_field=id_field,
        split=split,
        chat_template=chat_template,
        system_prompt=system_prompt,
        members=members,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        learning_rate=learning_rate,
        train_batch_size=train_batch_size,
        epochs=epochs,
        checkpoints=_floats(checkpoints, "--checkpoints"),
        snr_form=snr_form,
        stats_batch_size=stats_batch_size,
        shard_size=shard_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        progress=not (quiet or json_out),
    )
    result = select(cfg)
    from dataplan.compute.distributed import world

    if world()[0] != 0:
        return
    summary = result.summary()
    if json_out:
        emit_json(summary)
        return
    rows = [
        ("method", result.method),
        ("pool", str(result.n_pool)),
        ("kept", f"{result.k} ({result.k / result.n_pool:.1%})"),
        ("order", "lowest first" if lowest else "highest first"),
    ]
    q = summary["score_quantiles"]
    if q:
        rows.append(("score min/median/max", f"{q[0]:.4g} / {q[50]:.4g} / {q[100]:.4g}"))
    rows += [(f"{stage} (s)", f"{sec:.1f}") for stage, sec in result.seconds.items()]
    if out is not None:
        rows.append(("subset", str(out)))
    if scores_out is not None:
        rows.append(("scores", str(scores_out)))
    if result.run_dir:
        rows.append(("run folder", result.run_dir))
    console.print(key_value_table(f"dataplan select --method {result.method}", rows))
    for note in result.notes:
        console.print(f"note: {note}")


@app.command()
def calibrate(
    name: Annotated[str, typer.Option(help="Name of the calibration (usually the model's).")],
    model: ModelOpt = "smollm2-135m-instruct",
    tasks: Annotated[str, typer.Option(help="Comma-separated suite tasks.")] = "",
    data: Annotated[
        str,
        typer.Option(help="Comma-separated labelled task files (instead of or besides --tasks)."),
    ] = "",
    metric: Annotated[
        str,
        typer.Option(
            help="AUC metric: auto (option log-likelihood when a task has options), exact_match, token_f1, loglik_accuracy."
        ),
    ] = "auto",
    budgets: Annotated[str, typer.Option(help="Curve budgets; 0 is zero-shot.")] = "0,16,64,256",
    seeds: Annotated[str, typer.Option(help="Curve seeds.")] = "0",
    learning_rate: Annotated[float, typer.Option(help="Curve fine-tuning learning rate.")] = 5e-4,
    epochs: Annotated[float, typer.Option(help="Curve fine-tuning epochs.")] = 3.0,
    min_steps: Annotated[int, typer.Option(help="Fewest optimiser steps per curve point.")] = 20,
    max_steps: Annotated[int, typer.Option(help="Most optimiser steps per curve point.")] = 300,
    max_test: Annotated[int | None, typer.Option(help="Test examples per task.")] = 200,
    max_pool: Annotated[
        int | None, typer.Option(help="Pool examples scored for confidence per task.")
    ] = 400,
    n_labeled: Annotated[int, typer.Option(help="Low-confidence examples per task.")] = 32,
    adapter_seeds: Annotated[str, typer.Option(help="Fresh-adapter seeds for CoS-Low.")] = "0",
    min_gain: Annotated[
        float,
        typer.Option(
            help="Leave out of the fit tasks whose best fine-tuned score beats neither zero-shot "
            "nor the majority label by this much (negative: keep all)."
        ),
    ] = 0.05,
    out_dir: Annotated[
        Path, typer.Option(help="Study folder: curves, estimates, table, plot, calibration.json.")
    ] = Path("runs/calibrate"),
    cache: Annotated[
        Path | None, typer.Option(help="Curve result cache (resumes from it).")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fit AUC' = c · CoS-Low + I over tasks; leave-one-task-out scores for CoS-Low and baselines."""
    _setup_logging(quiet or json_out)
    from dataplan.training import TrainSettings
    from dataplan.workflows.calibrate import CalibrateConfig
    from dataplan.workflows.calibrate import calibrate as run_calibrate
    from dataplan.workflows.curve import CurveConfig
    from dataplan.workflows.estimate import EstimateConfig

    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    data_list = tuple(d.strip() for d in data.split(",") if d.strip())
    first = {"task": task_list[0]} if task_list else {"data": data_list[0] if data_list else "-"}
    progress = not (quiet or json_out)
    curve_cfg = CurveConfig(
        model=model,
        budgets=_ints(budgets, "--budgets"),
        seeds=_ints(seeds, "--seeds"),
        train=TrainSettings(
            learning_rate=learning_rate, epochs=epochs, min_steps=min_steps, max_steps=max_steps
        ),
        max_test=max_test,
        cache=_opt_str(cache),
        device=device,
        dtype=dtype,
        progress=progress,
        **first,
    )
    est_cfg = EstimateConfig(
        model=model,
        max_pool=max_pool,
        n_labeled=n_labeled,
        adapter_seeds=_ints(adapter_seeds, "--adapter-seeds"),
        device=device,
        dtype=dtype,
        progress=progress,
        **first,
    )
    cfg = CalibrateConfig(
        name=name,
        tasks=task_list,
        data=data_list,
        curve=curve_cfg,
        estimate=est_cfg,
        metric=metric,
        out_dir=str(out_dir),
        min_gain=None if min_gain < 0 else min_gain,
    )
    result = run_calibrate(cfg)
    if json_out:
        emit_json(result)
        return
    from dataplan.workflows.calibrate import markdown_table

    cal = result["calibration"]
    console.print(markdown_table(result["tasks"], result["leave_one_task_out"]))
    console.print(
        f"AUC' = {cal['coef']:.4f} · CoS-Low + {cal['intercept']:.4f}  (n_max {cal['n_max']}); written to {out_dir / 'calibration.json'}"
    )


scaling_app = typer.Typer(
    help="Dataset-volume scaling laws: fit runs, plan a compute budget.", no_args_is_help=True
)
app.add_typer(scaling_app, name="scaling")


@scaling_app.command("runs")
def scaling_runs_cmd(
    out: Annotated[Path, typer.Option(help="Runs file to write (.csv or .parquet).")],
    model: ModelOpt = "smollm2-135m-instruct",
    task: Annotated[str | None, typer.Option(help="A suite task.")] = None,
    data: Annotated[Path | None, typer.Option(help="Labelled task file instead of --task.")] = None,
    n: Annotated[
        str, typer.Option("--n", help="Numbers of training examples.")
    ] = "32,64,128,256,512",
    strategies: Annotated[
        str, typer.Option(help="Subsampling: random, shortest, longest, stratified.")
    ] = "random,shortest,longest,stratified",
    compute_tokens: Annotated[
        float | None, typer.Option(help="Training tokens per run (steps = C / (batch · L̄)).")
    ] = None,
    seeds: Annotated[str, typer.Option(help="Seeds.")] = "0",
    learning_rate: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = 5e-4,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 8,
    max_test: Annotated[int | None, typer.Option(help="Test examples.")] = 200,
    cache: Annotated[
        Path | None, typer.Option(help="Result cache (shared with `curve`; resumes from it).")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune at each (N, strategy) under a compute budget and record one row per run."""
    _setup_logging(quiet or json_out)
    from dataplan.training import TrainSettings
    from dataplan.workflows.curve import CurveConfig
    from dataplan.workflows.scaling_runs import scaling_runs

    sizes = _ints(n, "--n")
    cfg = CurveConfig(
        model=model,
        task=task,
        data=_opt_str(data),
        budgets=(0, *sizes),
        seeds=_ints(seeds, "--seeds"),
        train=TrainSettings(learning_rate=learning_rate, batch_size=batch_size),
        max_test=max_test,
        cache=_opt_str(cache),
        device=device,
        dtype=dtype,
        progress=not (quiet or json_out),
    )
    rows = scaling_runs(
        cfg,
        sizes=sizes,
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()),
        compute_tokens=compute_tokens,
        out=out,
    )
    if json_out:
        emit_json({"out": str(out), "runs": rows})
        return
    console.print(f"wrote {len(rows)} runs to {out}")


@scaling_app.command("fit")
def scaling_fit(
    runs: Annotated[
        Path,
        typer.Argument(
            help="Runs file (CSV or Parquet): n_examples, mean_tokens, model_params, performance, …"
        ),
    ],
    form: Annotated[str, typer.Option(help="volume, tokens, examples or chinchilla.")] = "volume",
    holdout: Annotated[
        str,
        typer.Option(
            help="point (leave out every seed of one N, L̄, M), run, or a column to leave one "
            "group out (e.g. strategy)."
        ),
    ] = "point",
    loss: Annotated[
        str, typer.Option(help="Robust loss: soft_l1, huber or linear (plain least squares).")
    ] = "soft_l1",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the fit starts and the bootstrap.")] = 0,
    strategy_effects: Annotated[
        bool,
        typer.Option(
            help="One intercept per subsampling strategy (P = law + E_s): for runs where subsets "
            "of equal volume differ by how they were chosen."
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Save the fitted law as JSON (for `scaling plan`).")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Save a PNG of the fit over the runs.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit a scaling law robustly, with bootstrap intervals and held-out comparison of the forms."""
    _setup_logging(True)
    from dataplan.workflows.scaling import fit_runs, plot_fit

    d = fit_runs(
        runs,
        form=form,
        holdout=holdout,
        loss=loss,
        n_bootstrap=bootstrap,
        seed=seed,
        strategy_effects=strategy_effects,
    )
    if out is not None:
        from dataplan.io import write_json

        write_json(out, d)
    if plot is not None:
        plot_fit(d, runs, plot)
    if json_out:
        emit_json(
            {
                k: v
                for k, v in d.items()
                if not k.startswith("bootstrap_") and k != "internal_params"
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"{d['equation']} on {d['n_runs']} runs")
    for col in ("parameter", "value", "interval"):
        table.add_column(col)
    for name, value in d["params"].items():
        iv = d["intervals"].get(name)
        table.add_row(
            name,
            f"{value:.4g}",
            "fixed"
            if name in d["fixed"]
            else ("—" if iv is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]"),
        )
    console.print(table)
    comp = Table(
        title=f"forms by held-out error (leave one {d['heldout']['by']} out; runs every form "
        "could predict)"
    )
    for col in ("form", "equation", "RMSE", "MAE", "runs"):
        comp.add_column(col)
    for row in d["comparison"]:
        comp.add_row(
            row["form"],
            row.get("equation", row.get("error", "")),
            fmt(row.get("heldout_rmse")),
            fmt(row.get("heldout_mae")),
            str(row.get("heldout_n", "—")),
        )
    console.print(comp)
    for note in d["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


@scaling_app.command("plan")
def scaling_plan(
    fit: Annotated[Path, typer.Option("--fit", help="Law JSON written by `scaling fit --out`.")],
    compute_tokens: Annotated[float, typer.Option(help="Training tokens the budget buys.")],
    max_examples: Annotated[
        int | None,
        typer.Option(help="Most examples available (default: the pool the runs recorded)."),
    ] = None,
    model_params: Annotated[
        float | None,
        typer.Option(help="Model size to plan for (default: the runs' median)."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Save a PNG of predicted performance against compute.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The (N, L̄, strategy) with the best predicted performance for a compute budget."""
    _setup_logging(True)
    import json as _json

    from dataplan.workflows.scaling import plan, plot_plan

    try:
        law = _json.loads(fit.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{fit}: cannot read the fitted law ({err})") from None
    if not isinstance(law, dict):
        raise ConfigError(f"{fit}: not a law file written by `dataplan scaling fit --out`")
    try:
        result = plan(law, compute_tokens, max_examples=max_examples, model_params=model_params)
    except ConfigError as err:
        raise ConfigError(f"{fit}: {err}") from None
    if plot is not None:
        plot_plan(law, plot, max_examples=max_examples, model_params=model_params)
    if json_out:
        emit_json(result)
        return
    b = result["best"]
    iv = b["interval"]
    rows = [
        ("budget (tokens)", f"{compute_tokens:,.0f}"),
        ("best strategy", b["strategy"]),
        ("examples N", f"{b['n_examples']:,}"),
        ("mean tokens L̄", f"{b['mean_tokens']:.1f}"),
        ("epochs", f"{b['epochs']:.2f}"),
        (
            "predicted performance",
            fmt(b["predicted_performance"], 3)
            + ("" if iv is None else f"  [{iv[0]:.3f}, {iv[1]:.3f}]"),
        ),
        ("within the fitted runs", "no (extrapolated)" if b["extrapolated"] else "yes"),
    ]
    console.print(key_value_table("dataplan scaling plan", rows))
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


tasks_app = typer.Typer(
    help="The built-in task suite (BIG-bench and reasoning-gym).", no_args_is_help=True
)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list(json_out: JsonOpt = False) -> None:
    """List the suite's tasks with their kind, metric and split sizes."""
    from dataplan.tasks.registry import TASKS

    specs = [t.to_dict() for t in TASKS.values()]
    if json_out:
        emit_json({"tasks": specs})
        return
    from rich.table import Table

    table = Table(title=f"dataplan task suite ({len(specs)} tasks)", box=None, pad_edge=False)
    table.add_column("name", no_wrap=True)  # names are what users type: never cut them
    table.add_column("kind", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("test/pool≤", justify="right", no_wrap=True)
    table.add_column("from", no_wrap=True)
    short = {"exact_match": "EM", "token_f1": "F1"}
    table.caption = "from: BIG-bench (* = a task of the CoS-Low paper) or reasoning-gym (RG)"
    for t in specs:
        table.add_row(
            t["name"],
            t["kind"].replace("_", " "),
            short.get(t["metric"], t["metric"]),
            f"{t['test_size']}/{t['pool_size']}",
            ("BB*" if t["in_paper"] else "BB") if t["source"] == "bigbench" else "RG",
        )
    console.print(table)


@tasks_app.command("export")
def tasks_export(
    name: Annotated[str, typer.Argument(help="Task name (see `dataplan tasks list`).")],
    out: Annotated[Path, typer.Option(help="Output file: .jsonl, .csv or .parquet.")],
    split: Annotated[str, typer.Option(help="pool (training), test or all.")] = "pool",
    json_out: JsonOpt = False,
) -> None:
    """Write a task's examples (id, prompt, answer, choices) to a file."""
    _setup_logging(json_out)
    from dataplan.tasks.registry import get_task, load_task
    from dataplan.workflows.export import export_examples

    spec = get_task(name)
    examples = load_task(name, split)
    export_examples(examples, out)
    summary = {"task": spec.name, "split": split, "examples": len(examples), "out": str(out)}
    if json_out:
        emit_json(summary)
    else:
        console.print(f"wrote {len(examples)} {split} examples of {spec.name} to {out}")


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    sys.exit(code)


def main() -> None:
    """Entry point: run the app, turning input errors into one line and exit code 2."""
    try:
        app()
    except DataplanError as err:
        _fail(str(err), err.exit_code)
    except OSError as err:  # a file or folder the user named cannot be read or written
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        _fail(f"{where}{err.strerror or err}", 2)
    except KeyboardInterrupt:
        err_console.print("interrupted; rerun with the same --run-dir to resume")
        sys.exit(130)

"""``dataplan estimate``, ``predict`` and ``coslow``: CoS-Low and the data budget it forecasts."""

from __future__ import annotations

import typer

from dataplan.cli.build import Output, config_command
from dataplan.cli.output import console, emit_json, fmt, forecast_rows, key_value_table, note
from dataplan.workflows.coslow import CosLowConfig
from dataplan.workflows.estimate_config import EstimateConfig
from dataplan.workflows.forecasting import PredictConfig


def register(app: typer.Typer) -> None:
    @config_command(app, "estimate", EstimateConfig)
    def estimate(cfg: EstimateConfig, out: Output) -> None:
        """Predict a task's data efficiency and the examples needed to reach a target (CoS-Low)."""
        from dataplan.workflows.estimate import estimate as run_estimate

        d = run_estimate(cfg).to_dict()
        if out.json:
            emit_json(d)
            return
        rows = [
            ("model", f"{d['model']['name']} ({d['model']['device']}, {d['model']['dtype']})"),
            ("pool", f"{d['n_pool']} examples, lowest {cfg.low_fraction:.0%} = {d['n_low']}"),
        ]
        if d["status"] == "needs_labels":
            console.print(key_value_table("dataplan estimate", rows))
            note(d["note"])
            return
        seeds = d["cos_low_per_seed"]
        spread = (
            f"  (adapter seeds: {', '.join(f'{s:.4f}' for s in seeds)})" if len(seeds) > 1 else ""
        )
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
        tok = d.get("tokenization") or {}
        if tok:
            rows.append(("tokenization", tok["convention"]))
        if d["forecast"] is not None:
            rows += forecast_rows(d["forecast"])
        rows += probe_rows(d.get("probe"))
        rows.append(("run folder", d["run_dir"]))
        console.print(key_value_table("dataplan estimate", rows))
        if d["note"]:
            note(d["note"])
        if tok.get("warning"):
            note(tok["warning"])

    @config_command(app, "predict", PredictConfig)
    def predict(cfg: PredictConfig, out: Output) -> None:
        """Forecast AUC', the data-efficiency curve and the examples needed, from a CoS-Low value."""
        from dataplan.workflows.forecasting import predict as run_predict

        fc, text = run_predict(cfg)
        d = fc.to_dict()
        if out.json:
            emit_json({**d, "note": text} if text else d)
            return
        console.print(
            key_value_table("dataplan predict", [("CoS-Low", fmt(cfg.cos_low)), *forecast_rows(d)])
        )
        if text:
            note(text)

    @config_command(app, "coslow", CosLowConfig)
    def coslow(cfg: CosLowConfig, out: Output) -> None:
        """CoS-Low of labelled examples: the median pairwise cosine of their LoRA gradients."""
        from dataplan.workflows.coslow import coslow_of_file

        res = coslow_of_file(cfg)
        if out.json:
            emit_json(res.to_dict())
            return
        rows = [
            ("examples", str(len(res.ids))),
            ("adapter", res.adapter),
            ("gradient length", f"{res.n_params:,}"),
            ("CoS-Low (median pairwise cosine)", fmt(res.coslow)),
            ("mean gradient norm", fmt(float(res.grad_norms.mean()))),
            ("tokenization", res.tokenization),
        ]
        console.print(key_value_table("dataplan coslow", rows))
        if res.differing:
            note(tokenization_warning(len(res.differing), len(res.ids), res.tokenization))


def tokenization_warning(n_differ: int, n: int, used: str) -> str:
    """The caution printed when the split and joint tokenisations read the examples apart."""
    other = "joint" if used == "split" else "split"
    return (
        f"{n_differ} of {n} examples tokenise differently under split and joint (a token "
        f"straddles the prompt/answer boundary): this CoS-Low ({used}) is not comparable with one "
        f"computed {other}, nor valid for a calibration fitted {other} (--tokenization)"
    )


def probe_rows(probe: dict | None) -> list[tuple[str, str]]:
    """The table rows of ``estimate --probe``: what was spent and what it bought."""
    if probe is None:
        return []
    rows = [("probe", probe["mode"] + (f": {probe['decision']}" if "decision" in probe else ""))]
    if "skipped" in probe:
        return [*rows, ("probe skipped", probe["skipped"])]
    rows.append(
        (
            "probe spent",
            f"{probe['seeds']} runs × {probe['depth']} steps ({probe['seconds']:.0f} s)",
        )
    )
    static = probe.get("static")
    if static is not None:
        sd = "—" if static["sd"] is None else f"{static['sd']:.3f}"
        rows.append(("AUC' static", f"{static['auc']:.3f} ± {sd}"))
    rows.append(("AUC' probe", f"{probe['probe']['auc']:.3f} ± {probe['probe']['sd']:.3f}"))
    c = probe["combined"]
    lo, hi = c["interval"]
    rows.append(("AUC' combined", f"{c['auc']:.3f} ± {c['sd']:.3f} [{lo:.3f}, {hi:.3f}]"))
    if "n_star" in c:
        a, b = c["n_star_interval"]
        rows.append(("n* combined", f"{c['n_star']:,.0f} [{a:,.0f}, {b:,.0f}]"))
    return rows

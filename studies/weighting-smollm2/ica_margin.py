"""Why ICA's margin scores rank swapped pairs above clean ones in the preference study.

The preference study's ICA weights separate clean from swapped pairs *backwards* (AUROC 0.37).
This looks at the two halves of each pair's score, s = s_ICA(y_w) − s_ICA(y_l), with
s_ICA(y) = ℓ(y | x) − ℓ(y | [3 holdout demonstrations; x]) (summed answer-token loss): for the
gold answer and the wrong one of every training pair (whichever of them the pair calls chosen),
how much the demonstrations lower each one's loss, and whether that gain follows how unlikely the
answer was without them. Same model, pairs, holdout and demonstrations as the study's ICA
weights (checked: the margin scores reproduce the weights' AUROC). Writes ica-margin.json.

    .venv/bin/python studies/weighting-smollm2/ica_margin.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def main() -> None:
    from preference import TASK, task_data
    from report import auroc
    from scipy.stats import spearmanr

    from dataplan.compute.ica import ica_scores
    from dataplan.data.formatting import PromptSettings
    from dataplan.io import write_json
    from dataplan.training.weighting.ica import ICASettings, choose_demonstrations
    from dataplan.workflows.experiment import ModelSpec

    noisy, holdout, _, _, bad = task_data(TASK)
    loaded = ModelSpec("smollm2-135m-instruct").load()
    formatter = PromptSettings().formatter(loaded.tokenizer)
    demos = choose_demonstrations(loaded.model, formatter, noisy, holdout, ICASettings())
    shown = [h.response("chosen") for h in holdout]
    swapped = np.array([p.id in bad for p in noisy])
    gold = [p.response("rejected" if s else "chosen") for p, s in zip(noisy, swapped, strict=True)]
    wrong = [p.response("chosen" if s else "rejected") for p, s in zip(noisy, swapped, strict=True)]
    g = ica_scores(loaded.model, formatter, gold, shown, demos, progress=True)
    w = ica_scores(loaded.model, formatter, wrong, shown, demos, progress=True)
    margin = np.where(swapped, w.score - g.score, g.score - w.score)  # s of the pair as given
    gains = np.concatenate([g.score, w.score])
    base = np.concatenate([g.loss, w.loss])
    rho, p = spearmanr(base, gains)
    out = {
        "task": TASK,
        "pairs": len(noisy),
        "margin_auroc_clean_over_swapped": auroc(margin, swapped),
        "gold": {"mean_gain": float(g.score.mean()), "mean_base_loss": float(g.loss.mean())},
        "wrong": {"mean_gain": float(w.score.mean()), "mean_base_loss": float(w.loss.mean())},
        "share_wrong_gains_more": float(np.mean(w.score > g.score)),
        "spearman_gain_vs_base_loss": {"rho": float(rho), "p": float(p)},
    }
    write_json(HERE / "ica-margin.json", out)
    print(out)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()

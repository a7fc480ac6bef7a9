"""``gsnr`` — GRADFILTERING's gradient signal-to-noise ratio (arXiv 2601.13697; docs/methods.md
§5.3) over an ensemble of M LoRA adapters trained on the pool, with ḡ_i = mean_m ‖g_i^m‖:

- ``default`` [our choice]: relative shrinkage over the members' relative late spread::

      G-SNR_i = ((ḡ_i,early − ḡ_i,late) / ḡ_i,early) / (std_m ‖g_i,late^m‖ / ḡ_i,late + ε)

  ε = ``snr_eps``; needs M ≥ 2 and two checkpoints;
- ``shrinkage`` [our choice]: the first factor alone, (ḡ_i,early − ḡ_i,late) / ḡ_i,early; works
  with M = 1, needs two checkpoints;
- ``classic``: the SNR of the late gradient vectors across members (shared initialisation)::

      SNR_i = ‖mean_m g_i^m‖² / mean_m ‖g_i^m − mean_m g_i^m‖²

  from Q_i = Σ_m ‖g_i^m‖² and ‖S_i‖² = ‖Σ_m g_i^m‖²; needs M ≥ 2.

The formulas are in :mod:`dataplan.maths.selection`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataplan.errors import ConfigError
from dataplan.maths import selection as sel
from dataplan.selection.base import EnsembleLayout, PoolStatistics, Scored, SelectionMethod

if TYPE_CHECKING:
    from dataplan.workflows.select_config import SelectConfig

TWO_POINT_FORMS = ("default", "shrinkage")


class GSNR(SelectionMethod):
    name = "gsnr"
    needs_ensemble = True
    default_members = 3

    def validate(self, cfg: SelectConfig) -> None:
        assert cfg.members is not None  # SelectConfig sets the default before validating
        if cfg.snr_form != "shrinkage" and cfg.members < 2:
            raise ConfigError("G-SNR needs --members >= 2 (its noise is the members' spread)")
        if cfg.snr_form in TWO_POINT_FORMS and len(cfg.checkpoints) < 2:
            raise ConfigError(f"the {cfg.snr_form} G-SNR needs an early and a late --checkpoints")

    def settings(self, cfg: SelectConfig) -> dict[str, Any]:
        return {"snr_form": cfg.snr_form, "snr_eps": cfg.snr_eps}

    def shared_init(self, cfg: SelectConfig) -> bool:
        return cfg.snr_form == "classic"

    def adapters(self, cfg: SelectConfig, layout: EnsembleLayout) -> list[str]:
        return layout.early + layout.late if cfg.snr_form in TWO_POINT_FORMS else layout.late

    def sum_groups(self, cfg: SelectConfig, layout: EnsembleLayout) -> dict[str, list[str]]:
        return {} if cfg.snr_form in TWO_POINT_FORMS else {"late": layout.late}

    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        assert stats.layout is not None and stats.sq_norms is not None
        columns = dict(stats.columns)
        if cfg.snr_form == "classic":
            q = stats.sq_norms.sum(axis=0)  # the late adapters only
            scores = sel.gsnr_classic(q, stats.sq_norm_of_sum["late"], stats.layout.members)
            return scores, columns, ["classic SNR: members share one adapter initialisation (seed)"]
        early, late = stats.norms(stats.layout.early), stats.norms(stats.layout.late)
        columns["grad_norm_early"] = early.mean(axis=0)
        columns["grad_shrinkage"] = sel.gsnr_shrinkage(early, late)
        if cfg.snr_form == "shrinkage":
            return columns["grad_shrinkage"], columns, []
        return sel.gsnr_default(early, late, eps=cfg.snr_eps), columns, []


__all__ = ["GSNR"]

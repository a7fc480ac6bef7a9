"""CoS-Low of a set of labelled examples: per-example LoRA gradients → median pairwise cosine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dataplan.data.formatting import PromptFormatter, encode_examples, label_exclusions
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.maths.similarity import cosine_from_gram, gradient_norms_from_gram, median_pairwise
from dataplan.models.lora import LoraSettings, attach_lora, load_adapter
from dataplan.options import FieldOptions, MemoryOptions, ModelOptions, PromptOptions, RunOptions

if TYPE_CHECKING:
    import torch

    from dataplan.models.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class CosLowResult:
    """CoS over one set of examples.

    Attributes:
        coslow: median of the N(N−1)/2 pairwise gradient cosines.
        cosines: (N, N) cosine matrix.
        grad_norms: (N,) per-example gradient norms.
        gram: (N, N) float64 Gram matrix of the flattened gradients.
        ids: the examples' ids, in matrix order.
        adapter: ``"fresh (seed S)"`` or the adapter folder.
        n_params: length of one flattened gradient.
        tokenization: ``split`` or ``joint`` (docs/methods.md §2.3), and ``label_exclusions``,
            the label ids the joint one masks.
        differing: ids of the examples the two tokenisations read differently.
    """

    coslow: float
    cosines: np.ndarray
    grad_norms: np.ndarray
    gram: np.ndarray
    ids: list[str]
    adapter: str
    n_params: int
    tokenization: str = "split"
    label_exclusions: tuple[int, ...] = ()
    differing: tuple[str, ...] = ()

    def to_dict(self, *, with_matrix: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "coslow": self.coslow,
            "tokenization": self.tokenization,
            "label_exclusions": list(self.label_exclusions),
            "tokenizations_differ_on": list(self.differing),
            "grad_norms": self.grad_norms.tolist(),
            "mean_grad_norm": float(self.grad_norms.mean()),
            "ids": self.ids,
            "adapter": self.adapter,
            "n_params": self.n_params,
        }
        if with_matrix:
            d["cosines"] = self.cosines.tolist()
        return d

    @classmethod
    def from_gram(
        cls, gram: np.ndarray, ids: list[str], adapter: str, n_params: int
    ) -> CosLowResult:
        cos = cosine_from_gram(gram)
        return cls(
            coslow=median_pairwise(cos),
            cosines=cos,
            grad_norms=gradient_norms_from_gram(gram),
            gram=np.asarray(gram, dtype=np.float64),
            ids=list(ids),
            adapter=adapter,
            n_params=n_params,
        )


def coslow(
    loaded: LoadedModel,
    examples: Sequence[Example],
    *,
    lora: LoraSettings | None = None,
    adapter: str | None = None,
    formatter: PromptFormatter | None = None,
    batch_size: int = 8,
    max_memory: int | None = None,
    space: str = "lora",
    progress: bool = True,
    tokenization: str = "split",
    exclude: Sequence[int] = (),
    distributed: bool = False,
) -> CosLowResult:
    """CoS-Low (or CoS over any example set) of labelled ``examples`` on ``loaded``'s model.

    A fresh LoRA adapter (``lora``, default r 64 / alpha 32 / all projections, seeded) is attached
    for the computation and removed afterwards, leaving the model as it was; ``adapter`` uses an
    existing PEFT adapter folder instead. ``tokenization``: ``split`` (dataplan's) or ``joint``
    (the CoS-Low authors', docs/methods.md §2.3); ``exclude``: the model family's label ids the
    joint one masks (also used to report which examples the two read differently);
    ``max_memory``: a budget in bytes the gradient pass's batches are sized to;
    ``distributed``: under ``torchrun``, the ranks share the gradient pass (every rank calls
    this and gets the same result).
    """
    from dataplan.compute.gradients import gradient_gram, lora_pairs, lora_parameter_count

    if len(examples) < 2:
        raise ConfigError("CoS needs at least 2 labelled examples")
    lora = lora or LoraSettings()
    formatter = formatter or PromptFormatter(loaded.tokenizer)
    encoded = encode_examples(formatter, examples, tokenization=tokenization, exclude=exclude)
    from dataplan.compute.distributed import world

    ranks = world() if distributed else (0, 1)
    if adapter is not None:
        peft_model = load_adapter(loaded.model, adapter)
        label = str(adapter)
    else:
        peft_model = attach_lora(loaded.model, lora)
        label = f"fresh (seed {lora.seed})"
    try:
        gram = gradient_gram(
            peft_model,
            encoded,
            loaded.tokenizer.pad_token_id,
            batch_size=batch_size,
            max_memory=max_memory,
            space=space,
            ranks=ranks,
            progress=progress and ranks[0] == 0,
        )
        n_params = lora_parameter_count(peft_model)
        if space == "frozen":
            label = "frozen weights (seed-free)"
            n_params = sum(
                cast("torch.Tensor", p.base.weight).numel() for p in lora_pairs(peft_model)
            )
    finally:
        loaded.model = peft_model.unload()
        loaded.model.eval()
    from dataclasses import replace

    from dataplan.data.formatting import tokenization_differences

    result = CosLowResult.from_gram(gram.numpy(), [ex.id for ex in examples], label, n_params)
    return replace(
        result,
        tokenization=tokenization,
        label_exclusions=tuple(exclude) if tokenization == "joint" else (),
        differing=tuple(tokenization_differences(formatter, examples, exclude)),
    )


@dataclass(kw_only=True)
class CosLowConfig(ModelOptions, FieldOptions, PromptOptions, MemoryOptions, RunOptions):
    """Settings of ``dataplan coslow``: CoS-Low of a file of labelled examples.

    Attributes:
        labeled: Labelled examples (JSONL, CSV, Parquet, …).
        adapter: Existing PEFT adapter folder instead of a fresh adapter.
        seed: Seed of the fresh adapter's random A.
        lora_r: LoRA rank of the gradient adapter.
        lora_alpha: LoRA alpha of the gradient adapter.
        lora_targets: 'all-linear' or comma-separated module names.
        batch_size: Examples per backward pass.
        tokenization: split (prompt and answer tokenised apart: dataplan's) or joint (one
            string, the CoS-Low authors' convention, which their published calibrations assume);
            default: the convention of the model's calibration (the one named like the model),
            else split.
    """

    labeled: str
    adapter: str | None = None
    seed: int = 0
    lora_r: int = 64
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"
    batch_size: int = 8
    tokenization: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be positive")
        self.memory_budget  # noqa: B018 - validates --max-memory
        if self.tokenization not in (None, "split", "joint"):
            raise ConfigError(f"--tokenization must be split or joint, got {self.tokenization!r}")
        self.lora  # noqa: B018 - validates the adapter settings

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings.from_options(self.lora_r, self.lora_alpha, self.lora_targets, self.seed)

    @property
    def resolved_tokenization(self) -> str:
        """``--tokenization``, else the convention of the model's calibration."""
        from dataplan.calibrations import tokenization_for

        return self.tokenization or tokenization_for(self.model)


def coslow_of_file(cfg: CosLowConfig, loaded: LoadedModel | None = None) -> CosLowResult:
    """CoS-Low of the labelled examples in ``cfg.labeled`` (the file is read before the model
    loads, so a bad file fails at once)."""
    if loaded is None:
        cfg.check_model()
    from dataplan.data.loading import load_examples

    examples = load_examples(cfg.labeled, fields=cfg.fields, require_answer=True, split=cfg.split)
    from dataplan.compute.distributed import local_device

    loaded = loaded or cfg.spec.load(device=local_device(cfg.device))  # torchrun: this rank's GPU
    formatter = cfg.prompts.formatter(loaded.tokenizer)
    return coslow(
        loaded,
        examples,
        lora=cfg.lora,
        adapter=cfg.adapter,
        formatter=formatter,
        batch_size=cfg.batch_size,
        max_memory=cfg.memory_budget,
        progress=cfg.progress,
        tokenization=cfg.resolved_tokenization,
        exclude=label_exclusions(cfg.model),
        distributed=True,  # under torchrun the ranks share the pass
    )

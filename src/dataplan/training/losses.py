"""Per-example weighted causal-LM losses (tensors in, tensors out).

With token losses ℓ_it = −log p(y_it | y_i,<t, x_i) over the labelled positions t ∈ T_i of
example i (the answer and the end-of-turn token; prompt and padding masked) and weights w_i ≥ 0:

- ``reduction="tokens"`` [our choice, the default]: every labelled token of example i counts
  w_i times::

      L = Σ_i w_i Σ_{t∈T_i} ℓ_it / Σ_i w_i |T_i|

  With every w_i = 1 this is exactly the unweighted loss of the Hugging Face ``Trainer`` (the
  mean over the batch's labelled tokens), so a uniform weighting reproduces an unweighted run.
- ``reduction="examples"``: the loss of the ICA paper (arXiv 2510.14459), with ℓ_i the mean over
  the example's labelled tokens::

      L = Σ_i w_i ℓ_i / Σ_i w_i,   ℓ_i = (1/|T_i|) Σ_{t∈T_i} ℓ_it

Both are means over the current batch; a batch whose weights are all 0 has loss 0 (and no
gradient), not NaN.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("tokens", "examples")


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy at every position and the mask of labelled positions.

    Args:
        logits: (B, S, V) the model's logits for the input sequence.
        labels: (B, S) target ids aligned with the input (``-100`` = not in the loss); the
            prediction at position s is scored against ``labels[:, s + 1]``.

    Returns:
        ``(losses, mask)``, each (B, S − 1): ℓ at each shifted position (0 where masked), and
        which positions count. Computed in float32 at least, as the ``Trainer``'s loss is.
    """
    shift_logits = (
        logits[:, :-1, :].float()
        if logits.dtype in (torch.float16, torch.bfloat16)
        else logits[:, :-1, :]
    )
    shift_labels = labels[:, 1:]
    mask = shift_labels.ne(-100)
    losses = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(shift_labels.shape)
    return losses * mask, mask


def weighted_loss(
    losses: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, reduction: str = "tokens"
) -> torch.Tensor:
    """The weighted mean of the module docstring.

    Args:
        losses: (B, T) token losses, 0 where masked.
        mask: (B, T) labelled positions.
        weights: (B,) non-negative per-example weights.
        reduction: ``tokens`` or ``examples``.

    Returns:
        A scalar.
    """
    w = weights.to(losses.dtype)
    if reduction == "tokens":
        numerator = (w * losses.sum(dim=1)).sum()
        denominator = (w * mask.sum(dim=1).to(losses.dtype)).sum()
    elif reduction == "examples":
        counts = mask.sum(dim=1).clamp(min=1).to(losses.dtype)
        numerator = (w * losses.sum(dim=1) / counts).sum()
        denominator = w.sum()
    else:
        raise ValueError(f"unknown reduction {reduction!r}; choose from {', '.join(REDUCTIONS)}")
    if denominator <= 0:
        return numerator * 0.0  # keeps the graph: a zero loss, zero gradients
    return numerator / denominator

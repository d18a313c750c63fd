"""Next-token cross-entropy, the token mean over every labelled position of the batch (LLaVA's loss).

`full` computes the logits of every position (what `lm_head` then `cross_entropy` does); `chunked` computes them
a chunk of positions at a time and never holds them all, for forward or backward; `liger` is Liger's fused
Triton kernel (GPU, `pip install liger-kernel`). The three give the same loss and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

IGNORE_INDEX = -100
LOSS_IMPLEMENTATIONS = ("full", "chunked", "liger")


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """The target of position t is the label of t + 1; the last position has none."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def causal_lm_loss(hidden_or_logits: torch.Tensor, weight: torch.Tensor | None, labels: torch.Tensor,
                   implementation: str = "full", chunk_size: int = 1024) -> torch.Tensor:
    """`full`: `hidden_or_logits` are the logits and `weight` is None. Otherwise they are the last hidden states
    and `weight` is the LM head's weight."""
    targets = shift_labels(labels).reshape(-1)
    count = (targets != IGNORE_INDEX).sum().clamp(min=1)
    if implementation == "full":
        logits = hidden_or_logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, ignore_index=IGNORE_INDEX,
                               reduction="sum") / count
    hidden = hidden_or_logits.reshape(-1, hidden_or_logits.shape[-1])
    keep = targets != IGNORE_INDEX  # positions without a target cost nothing
    hidden, targets = hidden[keep], targets[keep]
    if implementation == "chunked":
        return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_size) / count
    if implementation == "liger":
        return _liger_sum(hidden, weight, targets) / count
    raise ConfigError(f"loss_implementation: expected one of {LOSS_IMPLEMENTATIONS}, got {implementation!r}")


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropies of `hidden @ weight.T` against `targets`, a chunk of rows at a time.

    The gradients are computed in the forward pass, chunk by chunk (as Liger does), so that no logits outlive
    their chunk: memory is O(chunk x vocab) instead of O(tokens x vocab) for the logits and their gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size):
        needs_hidden, needs_weight = hidden.requires_grad, weight.requires_grad
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if needs_hidden or needs_weight:
                # d(lse - logit_t)/d logits = softmax - onehot, made in the logits' own memory
                grad_logits = logits.sub_(lse[:, None]).exp_()
                grad_logits[torch.arange(len(t), device=t.device), t] -= 1
                if needs_hidden:
                    torch.mm(grad_logits.to(hidden.dtype), weight, out=grad_hidden[start:start + chunk_size])
                if needs_weight:
                    grad_weight.addmm_(grad_logits.T, h.float())
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None


def _liger_sum(hidden, weight, targets):
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as e:
        raise ImportError("loss_implementation='liger' needs Liger's kernels on a GPU: pip install liger-kernel "
                          "(or use 'chunked', the same loss in plain PyTorch)") from e
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(weight, hidden, targets)

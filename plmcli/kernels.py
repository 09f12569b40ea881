"""Same math, less work or memory: the autograd functions and modules plm's CPU speed-ups swap in.

Each computes what the standard operation computes (to float rounding) and is checked against it
in the tests; plmcli.speed decides which model classes get them.

- ``_CrossEntropy``: cross-entropy whose backward pass reuses the forward pass's softmax.
- ``_drop_mask`` / ``_FastDropout``: dropout masks drawn 16 random bits an element (four elements
  per 64-bit draw, several times faster than ``bernoulli_``): the drop rate is p to within
  1/131072 and the expectation is preserved exactly.
- ``_attention`` / ``_RecomputedAttention``: attention with dropout whose backward pass recomputes
  its probabilities from query and key rather than keeping them.
- ``_GeluLinear``: the feed-forward's output projection applying GELU itself, keeping only the
  pre-activation for the backward pass.
"""

import torch
import torch.nn.functional as F
from torch import nn

FAST_ATTENTION = "plm_sdpa"  # the attention implementation name fast_dropout registers


class _CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (rows, classes) logits whose backward pass reuses the forward pass's softmax.

    F.cross_entropy writes the log-softmax (rows x classes) in the forward pass, then a zero-filled
    gradient for nll_loss and another full tensor in the backward pass: for the ~600 x 30,522
    logits of an MLM batch that is ~5% of a CPU training step. Here the forward pass writes the
    softmax once and the backward pass turns it into the gradient, softmax - one_hot, in place.
    The loss is -log(softmax at the target); rows where that probability underflows get
    logsumexp - logit instead. Same value and gradient, to float rounding.
    """

    @staticmethod
    def forward(ctx, logits, target):
        logits32 = logits.float()
        probabilities = torch.softmax(logits32, dim=-1)
        picked = probabilities.gather(1, target[:, None]).squeeze(1)
        losses = -torch.log(picked)
        tiny = picked < 1e-30
        if tiny.any():
            rows = logits32[tiny]
            losses[tiny] = torch.logsumexp(rows, dim=-1) - rows.gather(1, target[tiny][:, None]).squeeze(1)
        ctx.save_for_backward(probabilities, target)
        ctx.logits_dtype = logits.dtype
        ctx.spent = False
        return losses.mean()

    @staticmethod
    def backward(ctx, grad):
        if ctx.spent:  # the softmax became the first gradient
            raise RuntimeError("plm's masked-LM loss supports one backward pass per forward pass.")
        ctx.spent = True
        gradient, target = ctx.saved_tensors
        gradient[torch.arange(target.numel(), device=target.device), target] -= 1.0
        return gradient.mul_(grad / target.numel()).to(ctx.logits_dtype), None


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits, target) for 2-d logits and all-valid targets, with less memory traffic."""
    if target.numel() == 0:
        return F.cross_entropy(logits, target)  # nan, as the standard loss
    return _CrossEntropy.apply(logits, target)


def _drop_mask(tensor: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """Which elements dropout drops (bool, the tensor's shape), drawn 16 random bits an element, four a 64-bit
    draw, and the scale that keeps the expectation: 65536 / (65536 - round(p * 65536)).

    An element is dropped when its 16 bits fall below round(p * 65536), so the drop rate is p to
    within 1/131072, and scaling the kept elements makes the expectation exactly the input's, as
    with nn.Dropout. Call with p < 1.
    """
    dropped = round(p * 65536)  # of the 65536 values a 16-bit draw takes
    count = tensor.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=tensor.device)
    drop = words.view(torch.int16)[:count].view(tensor.shape) < dropped - 32768
    return drop, 65536 / (65536 - dropped)


def _dropout(tensor: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with the mask of ``_drop_mask``, in the input's dtype, as nn.Dropout."""
    if round(p * 65536) >= 65536:
        return torch.zeros_like(tensor)
    drop, scale = _drop_mask(tensor, p)
    return torch.where(drop, 0.0, tensor).mul_(scale)  # one pass, where masked_fill clones first


class _FastDropout(nn.Dropout):
    """nn.Dropout with the faster mask draw; identical in eval mode and at p = 0."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return input
        if self.p == 1.0:
            return torch.zeros_like(input)
        return _dropout(input, self.p)


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Scaled dot-product attention whose dropout on the probabilities uses the faster mask draw.

    Without dropout (evaluation) it is transformers' sdpa path itself. Shapes: query, key, value
    (batch, heads, len, head size); returns (batch, len, heads, head size) as transformers expects.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    if round(dropout * 65536) >= 65536:
        return torch.zeros_like(query).transpose(1, 2).contiguous(), None
    if torch.is_grad_enabled() and not torch.is_autocast_enabled(query.device.type):
        context = _RecomputedAttention.apply(query * scaling, key, value, attention_mask, dropout)
    else:
        probabilities = _probabilities(query * scaling, key, attention_mask)
        drop, scale = _drop_mask(probabilities, dropout)
        context = torch.matmul(torch.where(drop, 0.0, probabilities), value * scale)
    return context.transpose(1, 2).contiguous(), None


def _probabilities(query, key, attention_mask):
    """softmax(query @ key^T) masked, (batch, heads, len, len); query scaled, mask bool (True: attend) or added."""
    scores = torch.matmul(query, key.transpose(2, 3))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    return scores.softmax(dim=-1)


class _RecomputedAttention(torch.autograd.Function):
    """Attention with dropout on the probabilities that keeps query, key and value, not the probabilities.

    Autograd would keep the softmax's output and the dropped-out copy of it for the backward pass:
    two (batch, heads, len, len) tensors a layer, 50 MB for MiniLM at 32 x 128. As FlashAttention
    does, the backward pass recomputes the probabilities from query and key instead (one more
    len x len product a layer, about 1% of a training step) and keeps only the dropout mask, one
    byte an element. The outputs and gradients are those of the plain operations: the
    probabilities are recomputed by the same operations, and the gradients are computed as
    autograd computes them (softmax's own backward function). The dropped entries get the faster
    mask draw of ``_drop_mask``, scaled by its scale.
    """

    @staticmethod
    def forward(ctx, query, key, value, attention_mask, dropout):
        probabilities = _probabilities(query, key, attention_mask)
        drop, scale = _drop_mask(probabilities, dropout)
        # (P with dropped entries zeroed) @ (V times scale): the scale goes on the (len x head size)
        # tensor, one pass fewer over the largest one.
        context = torch.matmul(torch.where(drop, 0.0, probabilities), value * scale)
        ctx.save_for_backward(query, key, value, attention_mask, drop)
        ctx.scale = scale
        return context

    @staticmethod
    def backward(ctx, grad):
        query, key, value, attention_mask, drop = ctx.saved_tensors
        probabilities = _probabilities(query, key, attention_mask)
        grad_value = torch.matmul(torch.where(drop, 0.0, probabilities).transpose(-2, -1), grad) * ctx.scale
        grad_probabilities = torch.where(drop, 0.0, torch.matmul(grad, (value * ctx.scale).transpose(-2, -1)))
        grad_scores = torch._softmax_backward_data(grad_probabilities, probabilities, -1, probabilities.dtype)
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            grad_scores = grad_scores.masked_fill(~attention_mask, 0.0)  # as masked_fill's own backward
        grad_query = torch.matmul(grad_scores, key)
        grad_key = torch.matmul(grad_scores.transpose(-2, -1), query)
        return grad_query, grad_key, grad_value, None, None


def _register_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(FAST_ATTENTION, _attention)
    AttentionMaskInterface.register(FAST_ATTENTION, sdpa_mask)  # the same masks sdpa gets


class _GeluLinear(torch.autograd.Function):
    """linear(gelu(hidden), weight, bias), keeping ``hidden`` and not gelu(hidden) for the backward pass.

    Autograd keeps both the feed-forward's pre-activation (for GELU's gradient) and its
    activation (for the output projection's weight gradient): two (tokens x intermediate) tensors
    a layer. The activation is recomputed from the pre-activation in the backward pass instead,
    one elementwise pass, about 1% of a training step; the gradients are computed as autograd does.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias):
        ctx.save_for_backward(hidden, weight)
        return F.linear(F.gelu(hidden), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight = ctx.saved_tensors
        flat = grad.reshape(-1, grad.size(-1))  # (tokens, out)
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.ops.aten.gelu_backward(grad.matmul(weight), hidden)
        if ctx.needs_input_grad[1]:
            grad_weight = flat.t().mm(F.gelu(hidden).reshape(-1, hidden.size(-1)))
        if ctx.needs_input_grad[2]:
            grad_bias = flat.sum(0)
        return grad_hidden, grad_weight, grad_bias

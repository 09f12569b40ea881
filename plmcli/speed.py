"""Same math, less work: changes to how a model computes that leave what it computes unchanged.

Each function changes only the *class* of a model or of some of its modules (never a weight, a
parameter name or the config), returns whether it applied, and leaves models it does not know
alone. ``standard`` undoes all of them before a model is saved or handed on, so what plm writes is
the model transformers would have written.

- ``score_first_token_only``: a BERT classifier's last layer computes the [CLS] position only.
- ``masked_positions_only``: an MLM's prediction head (a hidden x vocab projection, as costly as
  the whole MiniLM encoder) runs at the ~15% of positions that carry a label, not at every token.
- ``fast_dropout``: on CPU, dropout masks drawn from 16 random bits an element (four elements per
  64-bit draw, several times faster than ``bernoulli_``): the drop rate is p to within 1/131072 and
  the expectation is preserved exactly. Attention's backward pass recomputes its probabilities
  from query and key rather than keeping them (``_RecomputedAttention``).
- ``recompute_gelu``: on CPU, the feed-forward keeps its pre-activation only and recomputes GELU
  in the backward pass. With the attention change, a MiniLM masked-LM step at 32 x 128 keeps
  about 500 MB for its backward pass instead of 900 MB.

One setting is for the process rather than a model: ``reuse_freed_memory`` keeps glibc from
returning every large freed block to the system, which a CPU training step pays for in page faults;
``return_unused_memory``, after each step, returns free pages whenever fragmentation has grown the
heap by 256 MiB.
"""

import ctypes
import functools
import sys

import torch
import torch.nn.functional as F
from torch import nn

FAST_ATTENTION = "plm_sdpa"  # the attention implementation name fast_dropout registers


def _layer_output_at(layer, picked, hidden_states, attention_mask):
    """A BertLayer's output at some positions only: queries from ``picked``, keys and values from all tokens.

    picked: (batch, n, hidden), the layer's input at those positions; hidden_states: (batch, len,
    hidden); attention_mask: None or the mask rows of those positions, (batch, 1, n, len).
    Returns (batch, n, hidden), equal to the standard layer's output at those positions.
    """
    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    count = picked.size(1)
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query = attention.query(picked).view(batch, count, heads, size).transpose(1, 2)  # (batch, heads, n, size)
    key = attention.key(hidden_states).view(batch, length, heads, size).transpose(1, 2)  # (batch, heads, len, size)
    value = attention.value(hidden_states).view(batch, length, heads, size).transpose(1, 2)
    dropout = attention.dropout.p if attention.training else 0.0
    if dropout and attention.config._attn_implementation == FAST_ATTENTION:
        context, _ = _attention(attention, query, key, value, attention_mask, dropout, attention.scaling)
    else:
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=attention.scaling
        ).transpose(1, 2)
    context = context.reshape(batch, count, heads * size)  # (batch, n, hidden)
    return layer.feed_forward_chunk(layer.attention.output(context, picked))


class _FirstTokenLayer:
    """Mixed into a BertLayer's class: its forward computes the [CLS] position only.

    A method of the layer's own class, not a closure, so replicas made by nn.DataParallel run on
    their own weights.
    """

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask[:, :, :1, :]  # (batch, 1, 1, len): [CLS]'s row
        return _layer_output_at(self, hidden_states[:, :1], hidden_states, attention_mask)  # (batch, 1, hidden)


def score_first_token_only(model) -> bool:
    """Make a BERT classifier's last layer compute only the [CLS] position, the one its head reads.

    The pooler and classifier of ``BertForSequenceClassification`` use the last layer's output at
    position 0 alone, yet a standard forward computes the query, attention output and feed-forward
    of the last layer for every token. Here the last layer attends from [CLS] only (keys and values
    still cover every token), so logits and gradients are the same and about 1/7 of a 6-layer
    encoder's work is skipped. Returns False, changing nothing, for other models.
    """
    if type(model).__name__ != "BertForSequenceClassification" or model.config._attn_implementation not in (
        "sdpa",
        "eager",
    ):
        return False
    layer = model.bert.encoder.layer[-1]
    if getattr(layer.attention.self, "is_causal", False) or layer.add_cross_attention:
        return False
    layer.__class__ = type(f"FirstToken{type(layer).__name__}", (_FirstTokenLayer, type(layer)), {})
    return True


class _SelectedPositionsLayer:
    """Mixed into a BERT's last layer: while ``selected`` is set, its forward computes those positions only.

    Queries, attention output and feed-forward run at the selected positions of each row (keys
    and values still cover every token); the result is scattered back into a (batch, len, hidden)
    tensor whose other positions hold zeros, which nothing downstream reads.
    """

    selected = None  # (batch, len) bool, set by the head's forward for one call

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        selected = self.selected
        if selected is None:
            return super().forward(hidden_states, attention_mask, *args, **kwargs)
        batch, length, width = hidden_states.shape
        most = max(int(selected.sum(1).max()), 1)
        # Each row's selected positions first, in order; shorter rows are topped up with unselected ones.
        order = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices[:, :most]  # (batch, most)
        spread = order.unsqueeze(-1).expand(-1, -1, width)  # (batch, most, hidden)
        if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.size(2) > 1:
            rows = order[:, None, :, None].expand(-1, attention_mask.size(1), -1, attention_mask.size(3))
            attention_mask = attention_mask.gather(2, rows)  # (batch, 1, most, len)
        output = _layer_output_at(self, hidden_states.gather(1, spread), hidden_states, attention_mask)
        return output.new_zeros(batch, length, width).scatter(1, spread, output)


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


def _encode(model, input_ids, attention_mask, token_type_ids, position_ids, kwargs, selected):
    """The encoder's outputs (sequence, pooled), its last layer computing only the ``selected`` positions."""
    last = model.bert.encoder.layer[-1]
    if isinstance(last, _SelectedPositionsLayer):
        last.selected = selected
    try:
        return model.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            return_dict=True,
            **kwargs,
        )
    finally:
        if isinstance(last, _SelectedPositionsLayer):
            last.selected = None


class _MaskedPositionsMLM:
    """Mixed into BertForMaskedLM: with labels, the head runs only where a label is set.

    Returns the loss of the standard forward and logits of shape (labelled positions, vocab), in
    the order of ``labels != -100``. Without labels (fill-mask, feature use) it is the standard forward.
    """

    accepts_loss_kwargs = False  # a mean over labelled positions, as the standard model's loss

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, **kw):
        from transformers.modeling_outputs import MaskedLMOutput

        if labels is None or kw.get("inputs_embeds") is not None:
            return super().forward(input_ids, attention_mask, token_type_ids, position_ids, labels=labels, **kw)
        labelled = labels != -100  # (batch, len)
        hidden = _encode(self, input_ids, attention_mask, token_type_ids, position_ids, kw, labelled)[0]
        logits = self.cls(hidden[labelled])  # (labelled positions, vocab)
        return MaskedLMOutput(loss=_cross_entropy(logits, labels[labelled]), logits=logits)


class _MaskedPositionsPreTraining:
    """Mixed into BertForPreTraining: the MLM head runs only where a label is set; NSP as standard."""

    accepts_loss_kwargs = False

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        next_sentence_label=None,
        **kw,
    ):
        from transformers.models.bert.modeling_bert import BertForPreTrainingOutput

        if labels is None or kw.get("inputs_embeds") is not None:
            return super().forward(
                input_ids,
                attention_mask,
                token_type_ids,
                position_ids,
                labels=labels,
                next_sentence_label=next_sentence_label,
                **kw,
            )
        labelled = labels != -100  # (batch, len)
        selected = labelled.clone()
        selected[:, 0] = True  # the pooler reads [CLS]
        hidden, pooled = _encode(self, input_ids, attention_mask, token_type_ids, position_ids, kw, selected)[:2]
        logits = self.cls.predictions(hidden[labelled])  # (labelled positions, vocab)
        next_logits = self.cls.seq_relationship(pooled)  # (batch, 2)
        loss = _cross_entropy(logits, labels[labelled])
        if next_sentence_label is not None:
            loss = loss + F.cross_entropy(next_logits, next_sentence_label.view(-1))
        return BertForPreTrainingOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=next_logits)


_MASKED_POSITION_HEADS = {"BertForMaskedLM": _MaskedPositionsMLM, "BertForPreTraining": _MaskedPositionsPreTraining}


def masked_positions_only(model) -> bool:
    """Run a BERT MLM's prediction head only at labelled (masked) positions when it has labels.

    The loss and the gradients are those of the standard forward: the positions it skips carry
    label -100 and add nothing to either. The subclass keeps the standard class's name, so
    ``config.architectures`` of anything saved still says BertForMaskedLM / BertForPreTraining.
    """
    base = type(model)
    mixin = _MASKED_POSITION_HEADS.get(base.__name__)
    if mixin is None or base.__module__ != "transformers.models.bert.modeling_bert":
        return False
    model.__class__ = type(base.__name__, (mixin, base), {"__module__": base.__module__, "_plm_standard": base})
    last = model.bert.encoder.layer[-1]
    plain_attention = model.config._attn_implementation in ("sdpa", "eager", FAST_ATTENTION)
    if plain_attention and not (getattr(last.attention.self, "is_causal", False) or last.add_cross_attention):
        layer_class = type(last)
        last.__class__ = type(f"Selected{layer_class.__name__}", (_SelectedPositionsLayer, layer_class), {})
    return True


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


def fast_dropout(model) -> bool:
    """Draw the dropout masks of a BERT-family model the faster way (for training on CPU).

    On CPU, ``bernoulli_`` (what nn.Dropout and sdpa's dropout call) costs about 15 ns an element,
    some 12% of a MiniLM masked-LM training step; ``_dropout`` draws the masks in a fraction of
    that. On GPUs the fused kernels are already fast: leave them.
    """
    if model.config.model_type not in ("bert", "roberta", "xlm-roberta") or model.config._attn_implementation not in (
        "sdpa",
        "eager",
    ):
        return False
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = _FastDropout
    _register_attention()
    model.set_attn_implementation(FAST_ATTENTION)
    return True


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


class _PreActivation:
    """Mixed into a BERT intermediate block under recompute_gelu: its output is the pre-activation."""

    def forward(self, hidden_states):
        return self.dense(hidden_states)


class _GeluOutput:
    """Mixed into a BERT output block under recompute_gelu: applies the GELU its intermediate block left out."""

    def forward(self, hidden_states, input_tensor):
        if torch.is_grad_enabled() and not torch.is_autocast_enabled(hidden_states.device.type):
            hidden_states = _GeluLinear.apply(hidden_states, self.dense.weight, self.dense.bias)
        else:
            hidden_states = self.dense(F.gelu(hidden_states))
        return self.LayerNorm(self.dropout(hidden_states) + input_tensor)


def _mix(module, mixin, prefix: str) -> None:
    """Give ``module`` a subclass of its class with ``mixin`` first; ``_plm_base`` names the class to go back to."""
    base = type(module)
    module.__class__ = type(f"{prefix}{base.__name__}", (mixin, base), {"_plm_base": base})


def recompute_gelu(model) -> bool:
    """Keep the feed-forward's pre-activation only, recomputing GELU in the backward pass (CPU training).

    For each BERT-family layer whose activation is exact GELU, the intermediate block returns the
    pre-activation and the output block applies GELU inside its projection (``_GeluLinear``): the
    same outputs and gradients with one (tokens x intermediate) tensor a layer less kept for the
    backward pass, 25 MB a layer for MiniLM at 32 x 128. Returns whether any layer changed.
    """
    if model.config.model_type not in ("bert", "roberta", "xlm-roberta"):
        return False
    changed = False
    for module in model.modules():
        intermediate, output = getattr(module, "intermediate", None), getattr(module, "output", None)
        activation = getattr(intermediate, "intermediate_act_fn", None)
        if not (
            type(activation).__name__ == "GELUActivation"
            and getattr(activation, "act", None) is F.gelu
            and type(intermediate).__name__.endswith("Intermediate")
            and type(output).__name__.endswith("Output")
            and all(hasattr(output, name) for name in ("dense", "dropout", "LayerNorm"))
        ):
            continue
        _mix(intermediate, _PreActivation, "PreActivation")
        _mix(output, _GeluOutput, "Gelu")
        changed = True
    return changed


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from (and go back to) the heap


def for_cpu_training(model) -> None:
    """Everything plm changes for training on a CPU: fast_dropout, recompute_gelu, reuse_freed_memory."""
    fast_dropout(model)
    recompute_gelu(model)
    reuse_freed_memory()


def reuse_freed_memory() -> bool:
    """Let glibc reuse freed memory within the process instead of unmapping it at every free.

    A training step on the CPU allocates and frees hundreds of megabytes of activations and
    gradients. By default glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh
    mappings and unmaps them when freed, so every step the kernel maps and zeroes that memory
    again: about 150,000 page faults a step for MiniLM at batch 32, 10-20% of the step time on a
    2-core host. Raising the mmap and trim thresholds keeps the memory in the heap for the next
    step. Returns whether it applied (glibc on Linux only).

    The heap fragments as steps go by: with MiniLM at 32 x 128, about 1.1 GB is in use at a
    step's peak, yet the heap grew to 2.4 GB over 60 steps, with or without this setting. The
    Trainer therefore calls ``return_unused_memory`` after each step (see ``memory_callback``).
    """
    global _reusing
    libc = _glibc()
    if libc is None:
        return False
    _reusing = bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW))
    return _reusing


_reusing = False  # whether reuse_freed_memory applied in this process
_GROWTH_LIMIT = 256 << 20  # heap growth after which return_unused_memory releases free pages
_heap_at_trim = None  # the heap's size at the first call or the last release


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2: ``arena`` is the bytes the heap holds from the system."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


@functools.cache
def _glibc():
    """The C library if it is glibc on Linux (its mallopt and mallinfo2 typed), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    except (OSError, AttributeError):  # another C library (musl) has no mallopt
        return None
    if hasattr(libc, "mallinfo2"):  # glibc 2.33 or later
        libc.mallinfo2.restype = _MallInfo2
    return libc


def return_unused_memory() -> bool:
    """Hand the heap's unused pages back to the system each time the heap has grown by 256 MiB.

    A step's activations are freed at its end and reused by the next step, so free memory alone
    says nothing; growth of the heap is what fragmentation adds. The first call notes the heap's
    size; when it has grown by more than 256 MiB since, malloc_trim releases the pages of free
    blocks anywhere in the heap (memory in use is untouched), and the next steps touch again only
    what they use. Returns whether it released (glibc 2.33 or later).
    """
    global _heap_at_trim
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return False
    heap = libc.mallinfo2().arena
    if _heap_at_trim is None:
        _heap_at_trim = heap
        return False
    if heap <= _heap_at_trim + _GROWTH_LIMIT:
        return False
    _heap_at_trim = heap
    return bool(libc.malloc_trim(0))


def memory_callback():
    """A Trainer callback running return_unused_memory after each step if reuse_freed_memory applied; else None."""
    if not _reusing:
        return None
    from transformers import TrainerCallback

    class ReturnUnusedMemory(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            return_unused_memory()

    return ReturnUnusedMemory()


def standard(model) -> None:
    """Undo masked_positions_only, fast_dropout and recompute_gelu: the model computes and saves as standard."""
    standard_class = type(model).__dict__.get("_plm_standard")
    if standard_class is not None:
        model.__class__ = standard_class
        last = model.bert.encoder.layer[-1]
        if isinstance(last, _SelectedPositionsLayer):
            last.__class__ = type(last).__mro__[2]  # (Selected..., _SelectedPositionsLayer, BertLayer, ...)
    for module in model.modules():
        if type(module) is _FastDropout:
            module.__class__ = nn.Dropout
        elif isinstance(module, (_PreActivation, _GeluOutput)):
            module.__class__ = type(module)._plm_base
    if model.config._attn_implementation == FAST_ATTENTION:
        model.set_attn_implementation("sdpa")

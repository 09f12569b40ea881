"""Same math, less work: adapters that change how a model computes, never what it computes.

Each adapter is made for exact model classes: it changes only the *class* of a model or of some
of its modules (never a weight, a parameter name or the config), returns whether it applied, and
leaves models it does not know alone. ``adapt`` applies those that fit and checks each against the
stock forward (and backward) on a tiny input, falling back to the stock model with one warning;
``standard`` undoes all of them before a model is saved or handed on, so what plm writes is the
model transformers would have written. The autograd functions they use are in plmcli.kernels;
every private name of transformers or torch plm relies on for speed is used here or there.

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

Families: BERT (all four), RoBERTa and XLM-R (the CPU training ones); DistilBERT and others run stock.
"""

import torch
import torch.nn.functional as F
from torch import nn

from plmcli.kernels import (
    FAST_ATTENTION,
    _attention,
    _cross_entropy,
    _drop_mask,
    _FastDropout,
    _GeluLinear,
    _probabilities,
    _RecomputedAttention,
    _register_attention,
)


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
    from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer

    if type(model) is not BertForSequenceClassification or model.config._attn_implementation not in ("sdpa", "eager"):
        return False
    layer = model.bert.encoder.layer[-1]
    if type(layer) is not BertLayer or getattr(layer.attention.self, "is_causal", False) or layer.add_cross_attention:
        return False
    _mix(layer, _FirstTokenLayer, "FirstToken")
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


def _feed_forward_classes() -> dict:
    """{intermediate block class: output block class} of the families recompute_gelu is made for."""
    from transformers.models.bert import modeling_bert
    from transformers.models.roberta import modeling_roberta
    from transformers.models.xlm_roberta import modeling_xlm_roberta

    return {
        modeling_bert.BertIntermediate: modeling_bert.BertOutput,
        modeling_roberta.RobertaIntermediate: modeling_roberta.RobertaOutput,
        modeling_xlm_roberta.XLMRobertaIntermediate: modeling_xlm_roberta.XLMRobertaOutput,
    }


def recompute_gelu(model) -> bool:
    """Keep the feed-forward's pre-activation only, recomputing GELU in the backward pass (CPU training).

    For each BERT-family layer whose activation is exact GELU, the intermediate block returns the
    pre-activation and the output block applies GELU inside its projection (``_GeluLinear``): the
    same outputs and gradients with one (tokens x intermediate) tensor a layer less kept for the
    backward pass, 25 MB a layer for MiniLM at 32 x 128. Returns whether any layer changed.
    """
    blocks = _feed_forward_classes()
    changed = False
    for module in model.modules():
        intermediate, output = getattr(module, "intermediate", None), getattr(module, "output", None)
        activation = getattr(intermediate, "intermediate_act_fn", None)
        if not (
            blocks.get(type(intermediate)) is type(output)
            and type(activation).__name__ == "GELUActivation"
            and getattr(activation, "act", None) is F.gelu
        ):
            continue
        _mix(intermediate, _PreActivation, "PreActivation")
        _mix(output, _GeluOutput, "Gelu")
        changed = True
    return changed


# A self-check's tolerance, relative to a tensor's norm: float32 summed in another order agrees to ~1e-6.
RTOL, ATOL = 1e-4, 1e-6


def _check_input(model) -> dict:
    """A tiny input the model's own loss takes: 2 rows of 8 tokens (the second padded after 5), with labels."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=generator)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    head = type(model).__name__
    if head.endswith(("ForMaskedLM", "ForPreTraining")):
        labels = torch.full_like(ids, -100)
        labels[0, 2], labels[1, 1] = ids[0, 2], ids[1, 1]
        batch["labels"] = labels
        if head.endswith("ForPreTraining"):
            batch["next_sentence_label"] = torch.tensor([0, 1])
    elif head.endswith("ForSequenceClassification"):
        problem, labels = model.config.problem_type, model.config.num_labels
        if problem == "regression":
            batch["labels"] = torch.tensor([0.5, -1.0])
        elif problem == "multi_label_classification":
            batch["labels"] = torch.eye(2, labels)
        else:
            batch["labels"] = torch.tensor([0, 1]) % labels
    device = next(model.parameters()).device
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _figures(model, batch: dict, backward: bool) -> list[torch.Tensor]:
    """What a self-check compares: the loss (or the logits, without labels) and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(backward):
        output = model(**batch)
    loss = getattr(output, "loss", None)
    if loss is None:  # no labels for this head: its outputs, and a stand-in loss for the gradients
        figures = [output[0].detach().float()]
        loss = output[0].float().square().mean()
    else:  # with labels, a head may score the labelled positions only: compare the loss
        figures = [loss.detach().float().reshape(1)]
    if backward:
        loss.backward()
        figures += [parameter.grad.detach().clone() for parameter in model.parameters() if parameter.grad is not None]
        model.zero_grad(set_to_none=True)
    return figures


def _agree(ours: list[torch.Tensor], stock: list[torch.Tensor]) -> bool:
    """Each tensor within RTOL of the stock one, as a whole (||ours - stock|| <= RTOL ||stock|| + ATOL).

    Measured on the whole tensor, not element by element: summing in another order moves single
    elements of a large gradient by more than their own size allows, never the tensor as a whole.
    """
    return len(ours) == len(stock) and all(
        a.shape == b.shape and float((a - b).norm()) <= RTOL * float(b.norm()) + ATOL for a, b in zip(ours, stock)
    )


def _attention_backward_agrees() -> bool:
    """The recomputing attention's output and gradients against autograd's through the same operations."""
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 2, 6, 4, generator=generator, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False
    torch.manual_seed(1)
    ours = _RecomputedAttention.apply(query, key, value, mask, 0.3)
    ours_grads = torch.autograd.grad(ours.square().sum(), (query, key, value))
    torch.manual_seed(1)
    probabilities = _probabilities(query, key, mask)
    drop, scale = _drop_mask(probabilities, 0.3)
    plain = torch.matmul(torch.where(drop, 0.0, probabilities), value * scale)
    plain_grads = torch.autograd.grad(plain.square().sum(), (query, key, value))
    return _agree([ours.detach(), *ours_grads], [plain.detach(), *plain_grads])


# Each speed-up: how a warning names it, and whether it changes training only (False: inference too).
ADAPTERS = {
    score_first_token_only: ("the [CLS]-only last layer", False),
    masked_positions_only: ("the masked-positions-only prediction head", False),
    fast_dropout: ("the faster dropout and attention", True),
    recompute_gelu: ("GELU recomputed in the backward pass", True),
}


def adapt(model, training: bool, cpu: bool) -> list[str]:
    """Apply the speed-ups made for this model's exact classes, each checked against the stock computation.

    Each one is applied, then its output (and, for training, its gradients) on a tiny input are
    compared with the stock model's; one that does not agree (or fails, as it would where a
    transformers or torch release has changed a name it uses) is undone with one warning, and the
    model runs as transformers wrote it; a model the tiny input cannot run (so nothing can be
    checked) gets none, with one warning. The CPU training speed-ups (``fast_dropout``,
    ``recompute_gelu``) apply only when ``training`` on a ``cpu``. Returns the names applied.
    """
    from plmcli import console

    chosen = [apply for apply, (_, training_only) in ADAPTERS.items() if not training_only or (training and cpu)]
    was_training = model.training
    model.eval()  # no dropout: the stock and the changed model compute the same thing
    try:
        try:
            batch = _check_input(model)
            stock = _figures(model, batch, training)
        except Exception as exc:  # a family whose forward does not take the test input: nothing to check against
            reason = f"{type(exc).__name__}: {str(exc)[:120]}"
            console.warn(
                f"the speed-ups could not be checked on {type(model).__name__} ({reason}); running without them."
            )
            return []
        applied = []
        for apply in chosen:
            try:
                if not apply(model):
                    continue
                agrees = _agree(_figures(model, batch, training), stock)
                if agrees and apply is fast_dropout and training:
                    agrees = _attention_backward_agrees()
                reason = "its results differ from the standard computation's"
            except Exception as exc:  # a renamed or changed library internal: run without this speed-up
                agrees, reason = False, f"{type(exc).__name__}: {str(exc)[:120]}"
            if agrees:
                applied.append(apply)
                continue
            standard(model)
            for earlier in applied:
                earlier(model)
            label = ADAPTERS[apply][0]
            console.warn(f"{label} was checked on a test input and failed ({reason}); running without it.")
    finally:
        model.train(was_training)
    return [apply.__name__ for apply in applied]


def standard(model) -> None:
    """Undo every adapter: the model computes and saves as transformers wrote it."""
    standard_class = type(model).__dict__.get("_plm_standard")
    if standard_class is not None:
        model.__class__ = standard_class
        last = model.bert.encoder.layer[-1]
        if isinstance(last, _SelectedPositionsLayer):
            last.__class__ = type(last).__mro__[2]  # (Selected..., _SelectedPositionsLayer, BertLayer, ...)
    for module in model.modules():
        if type(module) is _FastDropout:
            module.__class__ = nn.Dropout
        elif isinstance(module, (_PreActivation, _GeluOutput, _FirstTokenLayer)):
            module.__class__ = type(module)._plm_base
    if model.config._attn_implementation == FAST_ATTENTION:
        model.set_attn_implementation("sdpa")

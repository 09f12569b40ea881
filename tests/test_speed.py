"""Same math, less work: every change in plmcli.speed gives the standard model's outputs and gradients."""

import copy

import pytest
import torch

from plmcli import kernels, memory, speed


def _tiny_config(**overrides):
    from transformers import BertConfig

    settings = dict(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertConfig(**{**settings, **overrides})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_token_scoring_gives_the_same_logits_and_gradients(attention):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    config = _tiny_config(num_labels=3, attn_implementation=attention)
    standard = BertForSequenceClassification(config).train()
    fast = copy.deepcopy(standard)
    assert speed.score_first_token_only(fast)
    ids = torch.randint(5, 50, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:], mask[3, 2:] = 0, 0  # padded rows
    labels = torch.tensor([0, 1, 2, 1])
    outputs = [model(input_ids=ids, attention_mask=mask, labels=labels) for model in (standard, fast)]
    for output in outputs:
        output.loss.backward()
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, rtol=0, atol=1e-6)
    for (name, a), b in zip(standard.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-6, msg=name)
    assert list(fast.state_dict()) == list(standard.state_dict())


def _masked_batch():
    ids = torch.randint(5, 50, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[3, 3:] = 0, 0  # padded rows
    labels = torch.full_like(ids, -100)
    for row, column in [(0, 1), (0, 4), (1, 2), (2, 7), (2, 8), (3, 1)]:
        labels[row, column] = ids[row, column]
    return ids, mask, labels


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "BertForPreTraining"])
def test_masked_positions_only_gives_the_standard_loss_and_gradients(architecture):
    import transformers

    torch.manual_seed(0)
    standard = getattr(transformers, architecture)(_tiny_config()).train()
    fast = copy.deepcopy(standard)
    assert speed.masked_positions_only(fast)
    assert type(fast).__name__ == architecture
    ids, mask, labels = _masked_batch()
    extra = {"next_sentence_label": torch.tensor([0, 1, 1, 0])} if architecture == "BertForPreTraining" else {}
    outputs = [model(input_ids=ids, attention_mask=mask, labels=labels, **extra) for model in (standard, fast)]
    for output in outputs:
        output.loss.backward()
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss, rtol=0, atol=1e-6)
    full_logits = outputs[0].logits if architecture == "BertForMaskedLM" else outputs[0].prediction_logits
    sparse_logits = outputs[1].logits if architecture == "BertForMaskedLM" else outputs[1].prediction_logits
    torch.testing.assert_close(sparse_logits, full_logits[labels != -100], rtol=0, atol=1e-5)
    for (name, a), b in zip(standard.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-6, msg=name)
    without_labels = fast(input_ids=ids, attention_mask=mask)
    assert (
        without_labels.logits if architecture == "BertForMaskedLM" else without_labels.prediction_logits
    ).shape == (
        4,
        9,
        50,
    )


def test_standard_undoes_every_change_and_saves_the_standard_model(tmp_path):
    import json

    from transformers import AutoModelForMaskedLM, BertForMaskedLM

    model = BertForMaskedLM(_tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    assert speed.masked_positions_only(model) and speed.fast_dropout(model)
    assert type(model.bert.encoder.layer[-1]).__name__ == "SelectedBertLayer"
    speed.standard(model)
    assert type(model) is BertForMaskedLM and type(model.bert.encoder.layer[-1]).__name__ == "BertLayer"
    assert all(type(module) is torch.nn.Dropout for module in model.modules() if isinstance(module, torch.nn.Dropout))
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path)) is BertForMaskedLM


def test_fast_dropout_keeps_the_same_share_and_scale():
    torch.manual_seed(0)
    dropout = torch.nn.Dropout(0.1)
    dropout.__class__ = kernels._FastDropout
    ones = torch.ones(400_001)  # not a multiple of 4: the last 64-bit draw is used in part
    dropped = dropout.train()(ones)
    kept = dropped != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003
    scale = 65536 / (65536 - round(0.1 * 65536))
    assert abs(scale - 1 / 0.9) < 1e-4
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], scale))
    assert abs(dropped.mean().item() - 1.0) < 0.005  # the expectation is kept
    assert torch.equal(dropout.eval()(ones), ones)
    torch.manual_seed(1)
    first = dropout.train()(ones)
    torch.manual_seed(1)
    assert torch.equal(dropout(ones), first)  # seeded like torch's own dropout


@pytest.mark.parametrize("padded", [False, True])
def test_fast_attention_without_dropout_is_sdpa(padded):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    standard = BertForMaskedLM(_tiny_config(attention_probs_dropout_prob=0.1)).eval()
    fast = copy.deepcopy(standard)
    assert speed.fast_dropout(fast)
    ids, mask, _ = _masked_batch()
    if not padded:
        mask = torch.ones_like(mask)
    torch.testing.assert_close(
        fast(input_ids=ids, attention_mask=mask).logits, standard(input_ids=ids, attention_mask=mask).logits
    )


def test_fast_attention_with_dropout_masks_padding_and_drops_the_expected_share():
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(_tiny_config(attention_probs_dropout_prob=0.5))
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, :, :, 4:] = False  # the last two keys of row 1 are padding
    value[1, :, 4:] = 1e6  # any weight on padding would show
    output, _ = kernels._attention(model.bert.encoder.layer[0].attention.self, query, key, value, mask, dropout=0.5)
    assert output.shape == (2, 6, 4, 8)
    assert output[1].abs().max() < 1e3
    probabilities = torch.softmax(torch.zeros(1, 1, 1, 10_000), dim=-1)
    kept = kernels._dropout(probabilities, 0.5) != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.02


def test_other_models_are_left_alone():
    from transformers import BertForMaskedLM, BertForSequenceClassification

    model = BertForMaskedLM(_tiny_config())
    assert not speed.score_first_token_only(model)
    assert type(model.bert.encoder.layer[-1]).__name__ == "BertLayer"
    classifier = BertForSequenceClassification(_tiny_config())
    assert not speed.masked_positions_only(classifier)
    assert type(classifier) is BertForSequenceClassification


def test_masked_lm_loss_matches_cross_entropy_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(37, 501) * 4
    logits[3, 7] = 200.0  # row 3's target (0) gets a probability that underflows to 0 in float32
    target = torch.randint(0, 501, (37,))
    target[3] = 0
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = kernels._cross_entropy(ours, target)
    expected = torch.nn.functional.cross_entropy(theirs, target)
    torch.testing.assert_close(loss, expected)
    (loss * 3).backward()
    (expected * 3).backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    assert torch.isfinite(loss)


def _saved_bytes(model, **batch) -> tuple[torch.Tensor, int]:
    """The loss of one forward pass and the bytes autograd keeps for its backward pass (parameters excluded)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    return loss, sum(kept.values())


def test_recompute_gelu_gives_the_same_loss_and_gradients_and_keeps_less():
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    config = _tiny_config(intermediate_size=128)
    standard = BertForMaskedLM(config).train()
    lean = copy.deepcopy(standard)
    assert speed.recompute_gelu(lean)
    assert type(lean.bert.encoder.layer[0].intermediate).__name__ == "PreActivationBertIntermediate"
    ids, mask, labels = _masked_batch()
    (loss, standard_bytes), (lean_loss, lean_bytes) = (
        _saved_bytes(model, input_ids=ids, attention_mask=mask, labels=labels) for model in (standard, lean)
    )
    loss.backward()
    lean_loss.backward()
    torch.testing.assert_close(lean_loss, loss, rtol=0, atol=1e-6)
    for (name, a), b in zip(standard.named_parameters(), lean.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    activation = 4 * 9 * 128 * 4  # one (batch x len x intermediate) fp32 tensor
    assert standard_bytes - lean_bytes >= 2 * activation  # the GELU output of each of the 2 layers
    with torch.no_grad():  # evaluation takes the standard route through the same modules
        torch.testing.assert_close(lean.eval()(input_ids=ids).logits, standard.eval()(input_ids=ids).logits)
    speed.standard(lean)
    assert type(lean.bert.encoder.layer[0].intermediate).__name__ == "BertIntermediate"
    assert type(lean.bert.encoder.layer[0].output).__name__ == "BertOutput"


def test_recompute_gelu_leaves_other_activations_alone():
    from transformers import BertForMaskedLM

    model = BertForMaskedLM(_tiny_config(hidden_act="gelu_new"))
    assert not speed.recompute_gelu(model)
    assert type(model.bert.encoder.layer[0].intermediate).__name__ == "BertIntermediate"


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_recomputed_attention_gives_autograd_gradients_and_keeps_no_probabilities(mask_kind):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 4, requires_grad=True) for _ in range(3))
    attend = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    attend[1, :, :, 3:] = False  # the last two keys of row 1 are padding
    mask = {"bool": attend, "additive": torch.zeros(2, 1, 5, 5).masked_fill(~attend, -1e4), "none": None}[mask_kind]
    grad = torch.randn(2, 3, 5, 4)
    kept = []
    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        output = kernels._RecomputedAttention.apply(query, key, value, mask, 0.3)
    grads = torch.autograd.grad(output, (query, key, value), grad)
    torch.manual_seed(1)  # the same dropout mask, through plain autograd
    probabilities = kernels._probabilities(query, key, mask)
    drop, scale = kernels._drop_mask(probabilities, 0.3)
    expected = torch.matmul(torch.where(drop, 0.0, probabilities), value * scale)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for got, want in zip(grads, torch.autograd.grad(expected, (query, key, value), grad)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert kept and all(t.dtype == torch.bool or t.shape[-1] == 4 or t is mask for t in kept)  # no (5 x 5) floats


def test_fast_attention_with_dropout_trains_like_autograd_of_its_own_forward():
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(_tiny_config(attention_probs_dropout_prob=0.3))
    attention = model.bert.encoder.layer[0].attention.self
    query, key, value = (torch.randn(2, 4, 6, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, :, :, 4:] = False
    torch.manual_seed(1)
    output, _ = kernels._attention(attention, query, key, value, mask, dropout=0.3)
    grads = torch.autograd.grad(output.sum(), (query, key, value))
    torch.manual_seed(1)  # the same dropout mask, through plain autograd
    scores = torch.matmul(query * attention.scaling, key.transpose(2, 3)).masked_fill(
        ~mask, torch.finfo(torch.float32).min
    )
    probabilities = scores.softmax(dim=-1)
    drop, scale = kernels._drop_mask(probabilities, 0.3)
    expected = torch.matmul(torch.where(drop, 0.0, probabilities), value * scale).transpose(1, 2)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)
    for got, want in zip(grads, torch.autograd.grad(expected.sum(), (query, key, value))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _resident_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not memory.reuse_freed_memory(), reason="glibc on Linux only")
def test_return_unused_memory_releases_pages_once_the_heap_has_grown(monkeypatch):
    monkeypatch.setattr(memory, "_GROWTH_LIMIT", 64 << 20)
    monkeypatch.setattr(memory, "_heap_at_trim", None)
    assert not memory.return_unused_memory()  # the first call notes the heap's size
    libc = memory._glibc()
    start = libc.mallinfo2().arena
    # Blocks with small survivors between them, until the heap has grown past the limit (free holes
    # left by earlier tests fill first): freed, the blocks are holes the heap keeps.
    blocks, survivors = [], []
    while libc.mallinfo2().arena < start + (80 << 20) and len(blocks) < 1000:
        blocks.append(torch.ones(8 << 18))  # 8 MiB, every page touched
        survivors.append(torch.ones(1024))
    del blocks
    before = _resident_mb()
    assert memory.return_unused_memory()
    assert _resident_mb() < before - 60  # the holes' pages went back to the system
    assert not memory.return_unused_memory()  # no growth since
    assert all(float(tensor.sum()) == 1024 for tensor in survivors)  # memory in use is untouched


def test_memory_callback_only_where_freed_memory_is_kept(monkeypatch):
    monkeypatch.setattr(memory, "_reusing", False)
    assert memory.memory_callback() is None
    monkeypatch.setattr(memory, "_reusing", True)
    assert type(memory.memory_callback()).__name__ == "ReturnUnusedMemory"


def _family(kind: str, head: str, vocab_size: int = 60):
    """A tiny model of a family: BERT, RoBERTa, XLM-R or DistilBERT, with dropout on (as in training)."""
    import transformers

    sizes = dict(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )
    if kind == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=60, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    else:
        config = getattr(
            transformers, {"bert": "BertConfig", "roberta": "RobertaConfig", "xlm-roberta": "XLMRobertaConfig"}[kind]
        )(**sizes, max_position_embeddings=40)
    config.num_labels = 3
    prefix = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert"}[kind]
    torch.manual_seed(0)
    return getattr(transformers, f"{prefix}For{head}")(config).train()


def _classes(model) -> list[type]:
    return [type(module) for module in model.modules()]


@pytest.mark.parametrize(
    ("kind", "head", "expected"),
    [
        ("bert", "SequenceClassification", ["score_first_token_only", "fast_dropout", "recompute_gelu"]),
        ("bert", "MaskedLM", ["masked_positions_only", "fast_dropout", "recompute_gelu"]),
        ("bert", "PreTraining", ["masked_positions_only", "fast_dropout", "recompute_gelu"]),
        ("roberta", "SequenceClassification", ["fast_dropout", "recompute_gelu"]),
        ("roberta", "MaskedLM", ["fast_dropout", "recompute_gelu"]),
        ("xlm-roberta", "SequenceClassification", ["fast_dropout", "recompute_gelu"]),
        ("distilbert", "SequenceClassification", []),
        ("distilbert", "MaskedLM", []),
    ],
)
def test_adapt_applies_each_speed_up_made_for_the_family_checked_and_standard_undoes_them(
    kind, head, expected, capsys
):
    model = _family(kind, head)
    stock = copy.deepcopy(model)
    before = _classes(model)
    assert speed.adapt(model, training=True, cpu=True) == expected
    assert capsys.readouterr().err == ""  # every one agreed with the stock computation: no warning
    assert model.training  # adapt leaves the model in the mode it found it
    batch = speed._check_input(model)
    model.eval(), stock.eval()
    ours, theirs = speed._figures(model, batch, True), speed._figures(stock, batch, True)
    assert len(ours) == len(theirs) > 2  # the loss and the gradients
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    speed.standard(model)
    assert _classes(model) == before
    assert speed.adapt(_family(kind, head), training=False, cpu=True) == [
        name for name in expected if name not in ("fast_dropout", "recompute_gelu")
    ]


def test_a_speed_up_that_disagrees_with_the_stock_model_is_left_off_with_one_warning(monkeypatch, capsys):
    model = _family("bert", "MaskedLM")
    before = _classes(model)
    forward = speed._GeluOutput.forward
    monkeypatch.setattr(speed._GeluOutput, "forward", lambda self, h, x: forward(self, h, x) * 1.01)
    assert speed.adapt(model, training=True, cpu=True) == ["masked_positions_only", "fast_dropout"]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == [
        "Warning: GELU recomputed in the backward pass was checked on a test input and failed (its results differ "
        "from the standard computation's); running without it."
    ]
    assert not any(isinstance(module, speed._GeluOutput) for module in model.modules())
    speed.standard(model)
    assert _classes(model) == before


def test_the_self_check_holds_a_real_vocabulary_size_to_the_tensor_not_to_each_element(capsys):
    """An MLM head over 30,522 words sums gradients in another order: the same tensor to ~1e-6, not each element."""
    model = _family("bert", "MaskedLM", vocab_size=30522)
    assert speed.adapt(model, training=True, cpu=True) == ["masked_positions_only", "fast_dropout", "recompute_gelu"]
    assert capsys.readouterr().err == ""

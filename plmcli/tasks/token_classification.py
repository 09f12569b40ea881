"""Token classification: a tag per word (named entities, or any per-word tags) from CoNLL files or token lists.

Training (``TokenClassificationTask``): the tagged file is read by plmcli.tokendata (IOB1 found
and converted to IOB2, BIOES accepted, invalid transitions counted), the validation set held out
by document. Each word's first sub-token carries its tag, the others are ignored (-100), as in
transformers' run_ner.py. A sentence longer than ``--max-length`` is cut into windows at word
boundaries that share ``--stride`` tokens; each word is answered for by exactly one window (the
one where it has the most context), so no word is dropped or left untagged. Validation reports
entity-level precision, recall and F1 per type (seqeval, strict IOB2) and word accuracy; the best
checkpoint is kept by entity F1.

Use (``TokenUse``): predict, evaluate, serve and check for such a model. Texts are split into the
tokenizer's words (with their character offsets); a sentence's tags are the likeliest valid IOB2
sequence (``decode``: each word's likeliest tag, as transformers' pipeline reads them, unless that
leaves an I-X continuing nothing), and an entity's score is the mean of its words' scores for their
tags, as ``pipeline(aggregation_strategy="first")`` gives it. Scores are softmax probabilities, not
calibrated.
"""

import functools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import console, modeling, reporting, vocabulary
from plmcli.config import default_learning_rate
from plmcli.settings import TOKEN_CLASSIFICATION, ModelSettings
from plmcli.tasks.base import Built, Finished
from plmcli.tasks.classification import SequenceTask
from plmcli.training import length_parts

TOKENIZE_CHUNK = 2048  # sentences tokenised at a time
EXAMPLES = 3  # invalid transitions shown in a warning


# ---- words -> windows ---------------------------------------------------------------------------------------------


@dataclass
class Windows:
    """Sentences cut into model inputs: each window's ids and the words it answers for."""

    input_ids: list[list[int]] = field(default_factory=list)  # [CLS] pieces [SEP]
    first: list[list[int]] = field(default_factory=list)  # position of each answered word's first piece
    sentence: list[int] = field(default_factory=list)  # which sentence each window belongs to
    long: int = 0  # sentences cut into more than one window

    def labels(self, tag_ids: list[list[int]], words: list[tuple[int, int]]) -> list[list[int]]:
        """Each window's labels: the tag id at each answered word's first piece, -100 elsewhere."""
        result = []
        for ids, first, (sentence, start) in zip(self.input_ids, self.first, words):
            row = [-100] * len(ids)
            for offset, position in enumerate(first):
                row[position] = tag_ids[sentence][start + offset]
            result.append(row)
        return result


def spans_of(counts: list[int], budget: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(first word, end word, first answered, end answered) of each window over words of ``counts`` pieces.

    A window holds whole words, at most ``budget`` pieces; the next starts so that the two share at
    most ``stride`` pieces (at least one word further on). Words in a shared stretch are answered by
    the first window for its first half and by the second for the rest.
    """
    spans, start = [], 0
    while True:
        end, used = start, 0
        while end < len(counts) and used + counts[end] <= budget:
            used += counts[end]
            end += 1
        spans.append((start, end))
        if end >= len(counts):
            break
        following, shared = end, 0
        while following - 1 > start and shared + counts[following - 1] <= stride:
            following -= 1
            shared += counts[following]
        start = following
    answered = []
    for k, (start, end) in enumerate(spans):
        first = 0 if k == 0 else (start + spans[k - 1][1]) // 2
        last = len(counts) if k == len(spans) - 1 else (spans[k + 1][0] + end) // 2
        answered.append((start, end, first, last))
    return answered


def windows_of(pieces: list[list[list[int]]], tokenizer, max_length: int, stride: int) -> tuple[Windows, list]:
    """The windows of sentences given as their words' piece ids, and (sentence, first answered word) of each."""
    budget = max_length - 2  # [CLS] and [SEP]
    result, answered_from = Windows(), []
    for number, words in enumerate(pieces):
        words = [word[:budget] for word in words]  # a word longer than a window keeps its first pieces
        spans = spans_of([len(word) for word in words], budget, stride)
        result.long += len(spans) > 1
        for start, end, first, last in spans:
            ids, positions = [tokenizer.cls_token_id], []
            for index in range(start, end):
                if first <= index < last:
                    positions.append(len(ids))
                ids.extend(words[index])
            ids.append(tokenizer.sep_token_id)
            result.input_ids.append(ids)
            result.first.append(positions)
            result.sentence.append(number)
            answered_from.append((number, first))
    return result, answered_from


def word_pieces(sentences: list[list[str]], tokenizer) -> list[list[list[int]]]:
    """Each word's piece ids (a word the tokenizer reads as nothing, like a control character, is [UNK])."""
    result = []
    for start in range(0, len(sentences), TOKENIZE_CHUNK):
        part = sentences[start : start + TOKENIZE_CHUNK]
        encodings = tokenizer(part, is_split_into_words=True, add_special_tokens=False)
        for index, words in enumerate(part):
            grouped = [[] for _ in words]
            for piece, word in zip(encodings["input_ids"][index], encodings.word_ids(index)):
                if word is not None:
                    grouped[word].append(piece)
            result.append([group or [tokenizer.unk_token_id] for group in grouped])
    return result


def text_words(texts: list[str], tokenizer) -> tuple[list[list[list[int]]], list[list[tuple[int, int]]]]:
    """Texts split into the tokenizer's words: each word's piece ids, and its (start, end) characters."""
    pieces, offsets = [], []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        part = texts[start : start + TOKENIZE_CHUNK]
        encodings = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True)
        for index in range(len(part)):
            words, spans, last = [], [], None
            for piece, word, (begin, end) in zip(
                encodings["input_ids"][index], encodings.word_ids(index), encodings["offset_mapping"][index]
            ):
                if word != last:
                    words.append([])
                    spans.append([begin, end])
                    last = word
                words[-1].append(piece)
                spans[-1][1] = end
            pieces.append(words)
            offsets.append([tuple(span) for span in spans])
    return pieces, offsets


# ---- tags ---------------------------------------------------------------------------------------------------------


def decode(probabilities: np.ndarray, names: list[str]) -> list[int]:
    """A sentence's tags (ids): the likeliest sequence in which every I-X continues a B-X or I-X (Viterbi).

    probabilities: (words, tags), each word's tag probabilities. When each word's likeliest tag
    already makes such a sequence, as with a well-trained model nearly always, that is the answer,
    and it is what transformers' pipeline reads too. Otherwise the word-by-word choice would hold an
    I-X that continues nothing: rather than guess that it starts an entity or drop it (on CoNLL-2003,
    0.5 and 0.1 point of strict entity F1 below this), the sequence is the likeliest valid one as a
    whole. Tags without an I- prefix (POS tags, say) are never constrained.
    """
    best = probabilities.argmax(axis=1)
    follows = _follows(tuple(names))
    if follows is None:
        return best.tolist()
    may_start, may_follow = follows
    if may_start[best[0]] and may_follow[best[:-1], best[1:]].all():
        return best.tolist()
    logs = np.log(np.maximum(probabilities, 1e-30))
    step = np.where(may_follow, 0.0, -np.inf)  # (from, to)
    score = np.where(may_start, logs[0], -np.inf)
    back = []
    for row in logs[1:]:
        candidates = score[:, None] + step
        back.append(candidates.argmax(axis=0))
        score = candidates.max(axis=0) + row
    path = [int(score.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return path[::-1]


@functools.lru_cache(maxsize=8)
def _follows(names: tuple[str, ...]):
    """For IOB2 tag names: (which tags may start a sentence, which tag may follow which: (from, to)); else None."""
    inside = [name[2:] if name.startswith("I-") else None for name in names]
    if not any(inside):
        return None
    may_start = np.array([kind is None for kind in inside])
    may_follow = np.array(
        [[kind is None or name[2:] == kind for kind in inside] for name in names], dtype=bool
    )  # a tag continues an entity of its own type: B-X or I-X before I-X
    return may_start, may_follow


def entities(tags: list[str], scores: list[float]) -> list[tuple[str, int, int, float]]:
    """(type, first word, end word, score) of each entity of valid IOB2 tags; the score is its words' mean."""
    found, start = [], None
    for index, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == tags[start][2:]):
            found.append((tags[start][2:], start, index, float(np.mean(scores[start:index]))))
            start = None
        if tag.startswith("B-"):
            start = index
    return found


# ---- the model at work --------------------------------------------------------------------------------------------


@dataclass
class Tagger:
    """A token classifier loaded for inference, with where and how it runs."""

    tokenizer: object
    model: object
    device: str
    precision: str
    max_length: int
    stride: int
    name: str = "the model"

    @property
    def settings(self) -> ModelSettings:
        return ModelSettings.of(self.model.config)

    @property
    def tag_names(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def tag(self, pieces: list[list[list[int]]], batch_size: int, progress=None, gold=None) -> tuple[list, list, int]:
        """Each sentence's (tags, scores) per word, from its words' piece ids; and how many needed windows.

        With ``gold`` (each sentence's tag ids), the scores are the gold tags' probabilities instead.
        """
        from plmcli.inference import batched_logits, check_finite, scores

        windows, answered_from = windows_of(pieces, self.tokenizer, self.max_length, self.stride)
        logits = batched_logits(
            windows.input_ids,
            None,
            self.tokenizer,
            self.model,
            batch_size,
            self.device,
            self.precision,
            progress,
            per_token=True,
        )
        names = self.tag_names
        rows = [np.zeros((len(words), len(names))) for words in pieces]  # each word's tag probabilities
        for window, positions, (sentence, start) in zip(logits, windows.first, answered_from):
            if not positions:
                continue
            probabilities = scores(window[positions], multi_label=False)
            check_finite(probabilities, self.name)
            rows[sentence][start : start + len(positions)] = probabilities
        tags, values = [], []
        for sentence, probabilities in enumerate(rows):
            chosen = decode(probabilities, names) if len(probabilities) else []
            wanted = chosen if gold is None else gold[sentence]
            tags.append([names[tag] for tag in chosen])
            values.append([float(row[tag]) for row, tag in zip(probabilities, wanted)])
        return tags, values, windows.long

    def scores(self, texts: list[str], batch_size: int, pairs=None, progress=None) -> tuple[list[list[dict]], int]:
        """Each text's entities ({type, text, start, end, score}) and how many texts needed windows."""
        pieces, offsets = text_words(texts, self.tokenizer)
        tags, values, long = self.tag(pieces, batch_size, progress)
        found = []
        for text, spans, sentence_tags, sentence_scores in zip(texts, offsets, tags, values):
            found.append(
                [
                    {
                        "type": kind,
                        "text": text[spans[first][0] : spans[end - 1][1]],
                        "start": spans[first][0],
                        "end": spans[end - 1][1],
                        "score": round(score, 6),
                    }
                    for kind, first, end, score in entities(sentence_tags, sentence_scores)
                ]
            )
        return found, long

    def say_long(self, long: int, total: int) -> None:
        if long:
            console.info(
                f"{long} of {total} sentences were longer than {self.max_length} tokens; they were read in "
                f"overlapping windows (--stride {self.stride}), every word tagged."
            )


def load_tagger(config) -> Tagger:
    """The token classifier of a predict, evaluate or serve config, where and how it runs."""
    device = modeling.choose_device(config.device)
    modeling.choose_precision(config.precision, device)
    tokenizer, model = modeling.load_classifier(config.model, config.allow_pickle, tokens=True)
    from plmcli import speed

    speed.adapt(model, training=False, cpu=device == "cpu")
    settings = ModelSettings.of(model.config)
    precision = modeling.inference_precision(config.precision, device, settings.to_dict())
    limit = modeling.model_limit(tokenizer, model)
    max_length = min(getattr(config, "max_length", None) or settings.max_length or limit, limit)
    stride = min(settings.stride or max_length // 4, (max_length - 2) // 2)
    return Tagger(tokenizer, model, device, precision, max_length, stride, config.model)


# ---- training -----------------------------------------------------------------------------------------------------


class TokenClassificationTask(SequenceTask):
    """A tag per word, trained on a tagged file (CoNLL, CoNLL-U, or token and tag lists)."""

    def inputs(self) -> tuple[str, ...]:
        return tuple(item for item in (self.config.data, self.config.validation) if item)

    def read(self) -> None:
        from plmcli import tokendata

        config = self.config
        self.lineage_step = f"finetune on {config.data}"
        train = read_sentences(config.data, config)
        if config.validation:
            validation = read_sentences(config.validation, config)
            train_index, validation_index = list(range(len(train.words))), None
            held_out = f"{len(validation.words)} sentences of {config.validation}"
        else:
            validation = train
            train_index, validation_index = tokendata.split_by_document(train, config.validation_split, config.seed)
            unit = "documents" if len(set(train.documents)) > 1 else "sentences"
            share = f"{config.validation_split:.0%} of the {unit}"
            held_out = f"{len(validation_index)} sentences held out by {unit[:-1]} ({share})"
        if validation_index is None:
            validation_index = list(range(len(validation.words)))
        if config.max_train_samples:
            train_index = train_index[: config.max_train_samples]
        self.train_words = [train.words[i] for i in train_index]
        self.train_tags = [train.tags[i] for i in train_index]
        self.validation_words = [validation.words[i] for i in validation_index]
        self.validation_tags = [validation.tags[i] for i in validation_index]
        seen = {tag for tags in self.train_tags for tag in tags}
        unseen = sorted({tag for tags in self.validation_tags for tag in tags} - seen)
        if unseen:
            console.warn(f"the validation sentences have tags the training ones lack: {', '.join(unseen[:10])}.")
        self.tag_names = _sorted_tags(seen | set(unseen))
        self.scheme = train.scheme
        self.words_column, self.tags_column = config.text_column, config.label_column
        words = sum(len(sentence) for sentence in self.train_words)
        types = sorted({tag[2:] for tag in self.tag_names if tag != "O"})
        console.info(
            f"Data: {len(self.train_words)} training sentences ({words} words), {held_out}; "
            f"{len(self.tag_names)} tags, scheme {train.scheme}"
            + (" (converted to IOB2)" if train.scheme != "IOB2" else "")
            + f"; entity types: {', '.join(types)}"
        )

    def head_names(self) -> list[str]:
        return self.tag_names

    def texts(self):
        return self.config.data, (" ".join(words) for words in self.train_words)

    def token_lengths(self, tokenizer) -> list[int]:
        """Each training sentence's length in tokens, [CLS] and [SEP] included, before windows."""
        return [sum(len(word) for word in words) + 2 for words in word_pieces(self.train_words, tokenizer)]

    def build(self, source, device: str, precision: str, resume_from: Optional[Path]) -> Built:
        config = self.config
        self.resume_from = resume_from
        tokenizer = modeling.load_tokenizer(source)
        model, new_weights = modeling.load_for_classification(source, self.tag_names, tokens=True)
        if new_weights:
            console.info(new_weights)
        max_length = min(config.max_length, modeling.model_limit(tokenizer, model))
        if max_length < config.max_length:
            console.warn(f"--max-length {config.max_length} is more than {source.name} takes; using {max_length}.")
        self.stride = config.stride or max_length // 4
        lr = config.lr or default_learning_rate(model.config.hidden_size)
        console.info(
            f"Model: {source.name} with a new {len(self.tag_names)}-tag token classification head; "
            f"{device}, {precision}, learning rate {lr:g}{'' if config.lr else ' (default for its width)'}."
        )
        label2id = {name: i for i, name in enumerate(self.tag_names)}
        from datasets import Dataset

        sets, self.windows = {}, {}
        for part, words, tags in (
            ("train", self.train_words, self.train_tags),
            ("validation", self.validation_words, self.validation_tags),
        ):
            pieces = word_pieces(words, tokenizer)
            windows, answered_from = windows_of(pieces, tokenizer, max_length, self.stride)
            tag_ids = [[label2id[tag] for tag in sentence] for sentence in tags]
            labels = windows.labels(tag_ids, answered_from)
            sets[part] = Dataset.from_dict({"input_ids": windows.input_ids, "labels": labels})
            self.windows[part] = (windows, answered_from, pieces)
        self.long = {part: self.windows[part][0].long for part in sets}
        if any(self.long.values()):
            self.notes.append(
                f"{self.long['train'] + self.long['validation']} sentences were longer than {max_length} tokens and "
                f"were read in overlapping windows of {max_length} (--stride {self.stride}); no word was dropped."
            )
            console.info(self.notes[-1])
        from transformers import DataCollatorForTokenClassification, EarlyStoppingCallback

        words_per_batch = (
            sum(len(words) for words in self.train_words) / max(len(sets["train"]), 1) * config.batch_size
        )
        return Built(
            model=model,
            tokenizer=tokenizer,
            train_set=sets["train"],
            eval_set=sets["validation"],
            collator=DataCollatorForTokenClassification(tokenizer),
            lr=lr,
            max_length=max_length,
            base_name=source.name,
            lineage=modeling.lineage(source),
            resolved={
                **self.resolved_data(source),
                "text_column": self.words_column,
                "label_column": self.tags_column,
                "tags": self.tag_names,
                "stride": self.stride,
            },
            compute_metrics=self.trainer_metrics(),
            compute_loss_func=word_weighted_loss(model, words_per_batch),
            batch_parts=length_parts,
            callbacks=[EarlyStoppingCallback(config.early_stopping)] if config.early_stopping else [],
            arguments={
                **self.training_arguments(),
                "include_for_metrics": ["inputs"],
                # sentences in random batches, as run_ner.py draws them (length-grouped batches cost 0.6 to 1.0
                # point of entity F1 on CoNLL-2003); each batch is trained in length-sorted parts instead, the
                # same step with less padding (training.length_parts)
                "train_sampling_strategy": "random",
            },
        )

    def trainer_metrics(self):
        """A Trainer ``compute_metrics``: entity F1 and word accuracy of the validation sentences.

        The Trainer runs the windows in length-grouped order; each is matched back to its place by
        its ids (identical windows get identical predictions, so any match of equal ones is the same).
        """
        names = self.tag_names

        def compute_metrics(eval_prediction) -> dict:
            from plmcli.inference import scores

            windows, answered_from, pieces = self.windows["validation"]
            places: dict[tuple, list[int]] = {}
            for index, ids in enumerate(windows.input_ids):
                places.setdefault(tuple(ids), []).append(index)
            rows = [np.zeros((len(words), len(names))) for words in pieces]  # each word's tag probabilities
            pad = self.tokenizer_pad
            for logits, ids in zip(eval_prediction.predictions, eval_prediction.inputs):
                length = int(np.flatnonzero((ids != pad) & (ids != -100)).max()) + 1
                index = places[tuple(int(i) for i in ids[:length])].pop()
                sentence, start = answered_from[index]
                positions = windows.first[index]
                rows[sentence][start : start + len(positions)] = scores(logits[positions], multi_label=False)
            from plmcli.metrics import entity_report

            predicted = [[names[tag] for tag in decode(probabilities, names)] for probabilities in rows]
            report = entity_report(predicted, self.validation_tags)
            return {key: report[key] for key in ("f1", "macro_f1", "accuracy")}

        return compute_metrics

    def before_training(self, built: Built, device: str, precision: str, resumed_state: Optional[dict]) -> dict:
        self.tokenizer_pad = built.tokenizer.pad_token_id
        return {}

    def finish(self, trainer, train_output, built: Built, device: str, precision: str) -> Finished:
        config = self.config
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        model.eval()
        tagger = Tagger(built.tokenizer, model, device, "fp32", built.max_length, self.stride)
        _, _, pieces = self.windows["validation"]
        label2id = {name: i for i, name in enumerate(self.tag_names)}
        gold = [[label2id[tag] for tag in tags] for tags in self.validation_tags]
        predicted, likelihoods, _ = tagger.tag(pieces, config.batch_size * 2, gold=gold)
        model.train()
        from plmcli.metrics import entity_report

        report = entity_report(predicted, self.validation_tags)
        report["errors"] = error_breakdown(predicted, self.validation_tags)
        # The model's loss on the validation words: the mean cross-entropy of their gold tags.
        loss = float(-np.mean(np.log(np.maximum([p for sentence in likelihoods for p in sentence], 1e-12))))
        self.validation_predicted = predicted
        settings = ModelSettings(
            task=TOKEN_CLASSIFICATION,
            text_column=self.words_column,
            label_column=self.tags_column,
            max_length=built.max_length,
            scheme="IOB2",
            source_scheme=self.scheme,
            stride=self.stride,
        )
        metrics = {
            "validation": {"loss": loss, **report},
            "train": {
                "loss": trainer.plm_training_loss,
                "resumed_from": str(self.resume_from) if self.resume_from else None,
                "samples": len(self.train_words),
                "windows": len(built.train_set),
                "epochs": config.epochs,
                "learning_rate": built.lr,
                "batch_size": config.batch_size,
                "steps": train_output.global_step,
            },
            "validation_samples": len(self.validation_words),
            "task": TOKEN_CLASSIFICATION,
            "tags": self.tag_names,
            "scheme": {"found": self.scheme, "trained": "IOB2"},
            "max_length": built.max_length,
            "stride": self.stride,
            "long_sentences": self.long,
        }
        if config.early_stopping:
            metrics["early_stopping"] = self.early_stopping_report(trainer.state)
        timing = {
            "runtime_seconds": round(train_output.metrics["train_runtime"], 2),
            "samples_per_second": round(train_output.metrics["train_samples_per_second"], 2),
        }
        return Finished(metrics=metrics, timing=timing, model_settings=settings.to_dict(), resolved={})

    def write(self, staging: Path, trainer, built: Built, metrics: dict, timing: dict) -> None:
        write_card(staging, self.config, built.base_name, metrics, timing)
        self.plot_loss(staging, trainer, metrics)
        reporting.plot_entity_errors(staging / "errors.png", metrics["validation"], "validation set")


def word_weighted_loss(model, words_per_batch: float):
    """A Trainer ``compute_loss_func`` that gives every word the same weight, whatever batch it is in.

    The model's own loss is the mean over a batch's words, so a word of a batch of short headlines weighs
    more than one of a batch of long sentences. In training the loss is the sum over the batch's labelled
    words divided by the mean number of labelled words in a batch of the training set: the same size of
    step on average, and each word counted once. In evaluation it is the plain mean.
    """
    import torch

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()
        labels = labels.to(logits.device)
        total = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100, reduction="sum"
        )
        if model.training:
            return total / words_per_batch
        return total / (labels != -100).sum().clamp(min=1)

    return compute_loss


def read_sentences(path: str, config):
    """A tagged file of finetune's or evaluate's config, with its column options (see plmcli.tokendata)."""
    from plmcli import tokendata

    label = config.label_column
    number = int(label) if label and label.isdigit() else None
    return tokendata.read_tagged(
        path,
        config.encoding,
        tag_column=number,
        words_column=config.text_column,
        tags_column=None if number else label,
    )


def _sorted_tags(tags: set[str]) -> list[str]:
    """O first, then by entity type, B- before I-."""
    return sorted(tags, key=lambda tag: (tag != "O", tag[2:], tag[:2]))


def error_breakdown(predicted: list[list[str]], gold: list[list[str]]) -> dict:
    """How the predicted entities go wrong, counted against the gold ones (strict spans).

    wrong_type: the same words, another type; wrong_boundary: overlapping a gold entity, other words
    (of any type); missed: a gold entity that no prediction overlaps; spurious: a prediction that
    overlaps no gold entity.
    """
    counts = dict.fromkeys(("correct", "wrong_type", "wrong_boundary", "missed", "spurious"), 0)
    for predicted_tags, gold_tags in zip(predicted, gold):
        for kind, value in sentence_errors(predicted_tags, gold_tags):
            counts[kind] += 1
    return counts


def sentence_errors(predicted_tags: list[str], gold_tags: list[str]) -> list[tuple[str, str]]:
    """(kind, what) of each entity decision in one sentence: correct, wrong_type, wrong_boundary, missed, spurious."""
    from plmcli.tokendata import spans

    found = {(start, end): kind for kind, start, end in spans(predicted_tags)}
    wanted = {(start, end): kind for kind, start, end in spans(gold_tags)}
    result = []
    for (start, end), kind in wanted.items():
        if found.get((start, end)) == kind:
            result.append(("correct", f"{kind} {start}-{end}"))
        elif (start, end) in found:
            result.append(("wrong_type", f"{kind} {start}-{end} as {found[(start, end)]}"))
        elif any(s < end and start < e for s, e in found):
            result.append(("wrong_boundary", f"{kind} {start}-{end}"))
        else:
            result.append(("missed", f"{kind} {start}-{end}"))
    for (start, end), kind in found.items():
        if (start, end) not in wanted and not any(s < end and start < e for s, e in wanted):
            result.append(("spurious", f"{kind} {start}-{end}"))
    return result


def write_card(directory: Path, config, base_name: str, metrics: dict, timing: dict) -> None:
    """The model card of a token classifier (README.md in ``directory``): data, tags, scores per type, use."""
    model = shlex.quote(config.output)
    validation = metrics["validation"]
    rows = "\n".join(
        f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        for name, row in validation["per_type"].items()
    )
    errors = validation["errors"]
    command = " ".join(shlex.quote(part) for part in config.command) if config.command else "(Python API)"
    coverage = vocabulary.card_line(metrics.get("vocabulary"))
    text = f"""---
library_name: transformers
pipeline_tag: token-classification
tags: [plm, token-classification]
---

# Token classifier fine-tuned with plm

A `BertForTokenClassification`-style model that tags each word: fine-tuned from `{base_name}` on
`{config.data}` ({metrics["train"]["samples"]} sentences), validated on
{metrics["validation_samples"]} sentences ({config.validation or "held out by document"}).

- Tags ({len(metrics["tags"])}): {", ".join(f"`{tag}`" for tag in metrics["tags"])}; the file's scheme was
  {metrics["scheme"]["found"]}, trained as IOB2.
{coverage}- Each word's first sub-token carries its tag; sentences longer than {metrics["max_length"]} tokens are
  read in overlapping windows sharing {metrics["stride"]} tokens, every word tagged once.
- Scores are softmax probabilities of each word's tag, **not calibrated** (plm calibrates sentence-level
  scores only); an entity's score is the mean of its words'.

## Validation (entity level, strict IOB2, seqeval)

- Entity F1 **{validation["f1"]:.4f}** (micro), precision {validation["precision"]:.4f}, recall
  {validation["recall"]:.4f}, macro-F1 {validation["macro_f1"]:.4f}; word accuracy {validation["accuracy"]:.4f};
  loss {validation["loss"]:.4f}
- Errors: {errors["wrong_type"]} wrong type, {errors["wrong_boundary"]} wrong boundary, {errors["missed"]} missed,
  {errors["spurious"]} spurious ({errors["correct"]} correct)

| type | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

Trained in {timing["runtime_seconds"]:.0f} s ({timing["samples_per_second"]:.1f} windows/s) on {metrics["device"]}
({metrics["precision"]}); seed {metrics["seed"]}.

## Use

```
plm predict --model {model} "Angela Merkel visited Paris ."
plm predict --model {model} --file sentences.conll --output tagged.conll
plm evaluate --model {model} test.conll
```

or with transformers alone:

```python
from transformers import pipeline
tagger = pipeline("token-classification", model={json.dumps(config.output)}, aggregation_strategy="first")
```

Command: `{command}`
"""
    (directory / "README.md").write_text(text, encoding="utf-8")


def summary(result) -> str:
    """finetune's one-screen report of a token classifier."""
    metrics = result.metrics
    validation, train = metrics["validation"], metrics["train"]
    rows = [
        [name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", row["support"]]
        for name, row in validation["per_type"].items()
    ]
    errors = validation["errors"]
    lines = [
        "",
        f"Trained on {train['samples']} sentences ({train['windows']} windows) in "
        f"{result.timing['runtime_seconds']:.1f} s ({result.timing['samples_per_second']:.1f} windows/s, "
        f"{metrics['device']}, {metrics['precision']}).",
        f"Validation ({metrics['validation_samples']} sentences): entity F1 {validation['f1']:.4f} "
        f"(precision {validation['precision']:.4f}, recall {validation['recall']:.4f}), macro-F1 "
        f"{validation['macro_f1']:.4f}, word accuracy {validation['accuracy']:.4f}, loss {validation['loss']:.4f}",
        "",
        console.format_table(["type", "precision", "recall", "f1", "support"], rows),
        "",
        f"Errors: {errors['wrong_type']} wrong type, {errors['wrong_boundary']} wrong boundary, "
        f"{errors['missed']} missed, {errors['spurious']} spurious.",
        "Scores are per-word softmax probabilities, not calibrated.",
        *result.notes,
        f"Model saved to {result.output}/ (metrics.json, manifest.json, README.md, loss_curve.png, errors.png).",
        f'Predict with:  plm predict --model {shlex.quote(str(result.output))} "Angela Merkel visited Paris ."',
    ]
    return "\n".join(lines)

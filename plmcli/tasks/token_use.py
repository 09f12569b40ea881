"""A token classifier at work: predict, evaluate, serve and check for the token-classification task.

predict: texts (arguments, text lines, or a table's text column) get their entities, each with its
type, text, character start and end, and score; a CoNLL file comes back as the same file with a
predicted tag column added. evaluate: entity P/R/F1 per type, micro and macro (seqeval, strict
IOB2), word accuracy, an error breakdown (wrong type, wrong boundary, missed, spurious) and its
PNG, and errors.csv with each sentence that has a mistake, its gold and predicted entities. serve:
entities for texts. check: sentences, words, tag counts, the scheme, invalid transitions and
sentence lengths in tokens against ``--max-length``.
"""

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

from plmcli import console, reporting, vocabulary
from plmcli.checking import coverage_finding
from plmcli.errors import PlmError
from plmcli.settings import TOKEN_CLASSIFICATION
from plmcli.tasks.base import Use
from plmcli.tasks.token_classification import (
    entities,
    error_breakdown,
    load_tagger,
    read_sentences,
    sentence_errors,
    word_pieces,
)

SHOWN_ERRORS = 5
SENTENCE_OPTIONS = {  # predict options that only sentence classifiers take, with their defaults
    "top_k": ("--top-k", 1),
    "all_scores": ("--all-scores", False),
    "min_score": ("--min-score", None),
    "text_pair_column": ("--text-pair-column", None),
}


def _load_tagger(config):
    """The token classifier of ``config``; an exported directory runs through onnxruntime (plmcli.onnx_model)."""
    from plmcli import onnx_model

    return onnx_model.load_tagger(config) or load_tagger(config)


class TokenUse(Use):
    """What a token classifier does in predict, evaluate, serve and check."""

    task = TOKEN_CLASSIFICATION

    # ---- predict ----

    def predict(self, config, write=None):
        from plmcli import data, tokendata
        from plmcli.outputs import check_output_file
        from plmcli.prediction import PredictResult, destination, output_format

        for name, (option, default) in SENTENCE_OPTIONS.items():
            if getattr(config, name) != default:
                raise PlmError(f"{option} is for sentence classifiers; {config.model} tags words.")
        output = check_output_file(config.output, config.overwrite) if config.output else None
        tagged = config.file is not None and config.file != "-" and tokendata.is_tagged_file(config.file)
        if tagged and config.format is not None:
            raise PlmError(
                f"{config.file} is a CoNLL file: it comes back as CoNLL with a predicted tag column; "
                "leave out --format."
            )
        chosen = "conll" if tagged else output_format(config)
        if config.file is not None:
            data.check_readable(config.file)
        tagger = _load_tagger(config)
        started = time.perf_counter()
        if tagged:
            sentences = tokendata.read_tagged(config.file, config.encoding, require_tags=False)
            vocabulary.check(
                (" ".join(words) for words in sentences.words), tagger.tokenizer, config.file, vocabulary.USE_REMEDY
            )
            tags, _, long = tagger.tag(word_pieces(sentences.words, tagger.tokenizer), config.batch_size)
            lines = tokendata.conll_lines(config.file, config.encoding)
            text = tokendata.add_column(lines, tags, conllu=tokendata.is_conllu(config.file))
            with destination(output, config.overwrite, write) as sink:
                sink(text)
            tagger.say_long(long, len(tags))
            rate = len(tags) / max(time.perf_counter() - started, 1e-9)
            return PredictResult([], [], [], "conll", output, rate, len(tags))
        from plmcli.prediction import read_inputs

        texts, _, table, text_column = read_inputs(config, tagger.settings, None)
        vocabulary.check(texts, tagger.tokenizer, config.file or "the texts", vocabulary.USE_REMEDY)
        found, long = tagger.scores(texts, config.batch_size)
        tagger.say_long(long, len(texts))
        elapsed = time.perf_counter() - started
        columns = [*(table.columns if table is not None else ["text"])]
        column = next(
            c for c in ("entities", "predicted_entities", "plm_predicted_entities", None) if c not in columns
        )
        if column is None:
            raise PlmError(f"{config.file} already has columns for plm's predictions (entities, ...).")
        records = table.to_dict("records") if table is not None else [{"text": text} for text in texts]
        rows = [{**record, column: entity_list} for record, entity_list in zip(records, found)]
        if chosen in ("csv", "table"):
            for row in rows:
                row[column] = (json.dumps if chosen == "csv" else _phrase)(row[column])
        shown = [text_column or "text", column]
        from plmcli.formats import ChunkWriter, render

        with destination(output, config.overwrite, write) as sink:
            if chosen == "table":
                if output is not None:
                    sink(render(rows, columns + [column], shown, chosen))
            else:
                writer = ChunkWriter(sink, chosen, columns + [column])
                writer.add(rows)
                writer.close()
        kept = rows if chosen == "table" and output is None else []
        return PredictResult(
            kept, columns + [column], shown, chosen, output, len(texts) / max(elapsed, 1e-9), len(texts)
        )

    # ---- evaluate ----

    def evaluate(self, config, claim):
        from plmcli.evaluation import EvaluationResult
        from plmcli.formats import to_csv
        from plmcli.metrics import entity_report
        from plmcli.outputs import staged_dir

        sentences = read_sentences(config.data, config)
        tagger = _load_tagger(config)
        known = {tag[2:] for tag in tagger.tag_names if tag != "O"}
        unknown = sorted(set(sentences.entity_types) - known)
        if unknown:
            raise PlmError(
                f"{config.data} has entity types the model does not know: {', '.join(unknown)}; "
                f"the model's types are: {', '.join(sorted(known))}."
            )
        console.info(f"Evaluating on {len(sentences.words)} sentences of {config.data} (scheme {sentences.scheme}).")
        coverage = vocabulary.check(
            (" ".join(words) for words in sentences.words), tagger.tokenizer, config.data, vocabulary.USE_REMEDY
        )
        predicted, scores, long = tagger.tag(word_pieces(sentences.words, tagger.tokenizer), config.batch_size)
        tagger.say_long(long, len(predicted))
        report = entity_report(predicted, sentences.tags)
        report["errors"] = error_breakdown(predicted, sentences.tags)
        metrics = {
            "data": config.data,
            "model": config.model,
            "samples": len(sentences.words),
            "words": sum(len(words) for words in sentences.words),
            "task": TOKEN_CLASSIFICATION,
            "scheme": sentences.scheme,
            **report,
            "long_sentences": long,
            "vocabulary": coverage,
        }
        errors = []
        for index, (words, gold, tags) in enumerate(zip(sentences.words, sentences.tags, predicted)):
            found = sentence_errors(tags, gold)
            if any(kind != "correct" for kind, _ in found):
                errors.append(
                    {
                        "line": sentences.lines[index],
                        "sentence": " ".join(words),
                        "gold": _spans_text(words, gold),
                        "predicted": _spans_text(words, tags),
                        "errors": "; ".join(f"{kind}: {what}" for kind, what in found if kind != "correct"),
                    }
                )
        with staged_dir(claim) as staging:
            reporting.write_json(staging / "metrics.json", metrics)
            (staging / "errors.csv").write_text(to_csv(errors, list(errors[0])) if errors else "", encoding="utf-8")
            reporting.plot_entity_errors(staging / "errors.png", metrics, f"{config.model} on {config.data}")
            reporting.write_manifest(staging / "manifest.json", config, {}, [config.data])
        return EvaluationResult(output=claim.path, metrics=metrics, errors=errors)

    def evaluate_summary(self, result) -> str:
        metrics = result.metrics
        rows = [
            [name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", row["support"]]
            for name, row in metrics["per_type"].items()
        ]
        errors = metrics["errors"]
        lines = [
            f"{metrics['samples']} sentences ({metrics['words']} words): entity F1 {metrics['f1']:.4f} "
            f"(precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}), macro-F1 "
            f"{metrics['macro_f1']:.4f}, word accuracy {metrics['accuracy']:.4f}",
            "",
            console.format_table(["type", "precision", "recall", "f1", "support"], rows),
            "",
            f"Errors: {errors['wrong_type']} wrong type, {errors['wrong_boundary']} wrong boundary, "
            f"{errors['missed']} missed, {errors['spurious']} spurious ({errors['correct']} correct); "
            f"{len(result.errors)} sentences have a mistake" + ("; the first:" if result.errors else "."),
        ]
        if result.errors:
            shown = [[row["sentence"][:60], row["errors"][:60]] for row in result.errors[:SHOWN_ERRORS]]
            lines.append(console.format_table(["sentence", "errors"], shown))
        lines += ["", f"Report: {result.output}/ (metrics.json, errors.png, errors.csv)"]
        return "\n".join(lines)

    # ---- serve ----

    def load(self, config):
        return _load_tagger(config)

    def warm_up_pairs(self, runner) -> Optional[list[str]]:
        return None

    def request_problem(self, body, runner, config) -> Optional[tuple[int, str]]:
        if body.text_pairs is not None:
            return 422, "this model tags the words of single texts: leave out text_pairs."
        if body.top_k > 1 or body.all_scores or body.min_score is not None:
            return 422, "this model tags words: top_k, all_scores and min_score are for sentence classifiers."
        return None

    def answers(self, runner, body, outputs, model: str) -> list[dict]:
        return [{"entities": found} for found in outputs]

    def describe(self, runner) -> dict:
        return {
            "task": TOKEN_CLASSIFICATION,
            "labels": runner.tag_names,
            "entity_types": sorted({tag[2:] for tag in runner.tag_names if tag != "O"}),
            "stride": runner.stride,
            "text_pair_column": None,
        }

    # ---- check ----

    def check(self, config) -> dict:
        from plmcli import modeling

        sentences = read_sentences(
            config.data,
            SimpleNamespace(
                label_column=config.label_column, text_column=config.text_column, encoding=config.encoding
            ),
        )
        counts: dict[str, int] = {}
        for tags in sentences.tags:
            for tag in tags:
                counts[tag] = counts.get(tag, 0) + 1
        modeling.quiet_libraries()
        tokenizer = modeling.load_tokenizer(modeling.resolve(config.model))
        lengths = np.array([sum(len(word) for word in words) + 2 for words in word_pieces(sentences.words, tokenizer)])
        entity_counts: dict[str, int] = {}
        for tags in sentences.tags:
            for kind, _, _, _ in entities(tags, [0.0] * len(tags)):
                entity_counts[kind] = entity_counts.get(kind, 0) + 1
        return {
            "data": config.data,
            "task": TOKEN_CLASSIFICATION,
            "sentences": len(sentences.words),
            "words": int(sum(len(words) for words in sentences.words)),
            "documents": len(set(sentences.documents)),
            "scheme": sentences.scheme,
            "converted_to_iob2": sentences.converted,
            "tags": {tag: counts[tag] for tag in sorted(counts, key=lambda t: (t != "O", t[2:], t[:2]))},
            "entities": dict(sorted(entity_counts.items())),
            "invalid_transitions": len(sentences.invalid),
            "invalid_transition_examples": [
                {"line": sentences.lines[s], "word": sentences.words[s][w], "after": previous, "tag": tag}
                for s, w, previous, tag in sentences.invalid[:SHOWN_ERRORS]
            ],
            "token_length_percentiles": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
            | {"max": int(lengths.max())},
            "max_length": config.max_length,
            "windowed_at_max_length": round(float((lengths > config.max_length).mean()), 4),
            "vocabulary": vocabulary.measure((" ".join(words) for words in sentences.words), tokenizer),
        }

    def check_summary(self, report: dict) -> str:
        total = sum(report["entities"].values()) or 1
        rows = [[kind, count, f"{count / total:.1%}"] for kind, count in report["entities"].items()]
        percentiles = ", ".join(f"{k} {v}" for k, v in report["token_length_percentiles"].items())
        notes = []
        if report["converted_to_iob2"]:
            notes.append(f"the tags are {report['scheme']}; plm converts them to IOB2 for training.")
        if report["invalid_transitions"]:
            notes.append(
                f"{report['invalid_transitions']} tags continue an entity that is not there (like I-PER after O); "
                "strict entity scores will not count them."
            )
        if len(report["tags"]) < 2:
            notes.append("fewer than 2 tags: a tagger cannot be trained on this file.")
        if report["windowed_at_max_length"]:
            notes.append(
                f"{report['windowed_at_max_length']:.1%} of sentences are longer than --max-length "
                f"{report['max_length']} tokens; they are read in overlapping windows, no word lost."
            )
        notes += coverage_finding(report)
        lines = [
            f"{report['data']}: {report['sentences']} sentences, {report['words']} words, {report['documents']} "
            f"documents; scheme {report['scheme']}",
            "",
            console.format_table(["entity type", "entities", "share"], rows),
            "",
            "tags: " + ", ".join(f"{tag} {count}" for tag, count in report["tags"].items()),
            f"invalid transitions: {report['invalid_transitions']}",
            *[
                f"  line {e['line']}: '{e['word']}' tagged {e['tag']} after {e['after']}"
                for e in report["invalid_transition_examples"]
            ],
            f"sentence lengths in tokens: {percentiles}; longer than {report['max_length']}: "
            f"{report['windowed_at_max_length']:.1%}",
            "",
        ]
        lines += [f"- {note}" for note in notes] or ["- nothing to fix."]
        return "\n".join(lines)

    def finetune_summary(self, result) -> str:
        from plmcli.tasks.token_classification import summary

        return summary(result)


def _phrase(found: list[dict]) -> str:
    """Entities for a table cell: 'Angela Merkel (PER 0.98); Paris (LOC 0.99)'."""
    return "; ".join(f"{entity['text']} ({entity['type']} {entity['score']:.2f})" for entity in found)


def _spans_text(words: list[str], tags: list[str]) -> str:
    from plmcli.tokendata import spans

    return "; ".join(f"{' '.join(words[start:end])} ({kind})" for kind, start, end in spans(tags))


def check_data_is_tagged(path: str) -> bool:
    """Whether a file given to a sentence classifier's command holds tagged words instead."""
    from plmcli import tokendata

    return path != "-" and Path(path).is_file() and tokendata.is_tagged_file(path)

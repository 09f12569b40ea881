"""What a run leaves beside its weights: metrics.json, manifest.json, a model card (README.md), plots."""

import hashlib
import json
import math
import platform
import shlex
import sys
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

from plmcli import __version__, console, textfiles, vocabulary
from plmcli.errors import RUNTIME_FAILURE, PlmError


def write_json(path: Path, content: dict) -> None:
    """Write a JSON report, pretty-printed, UTF-8, ending with a newline; a NaN or infinity is never written."""
    try:
        text = json.dumps(content, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise PlmError(
            f"{path.name} would hold a number that is NaN or infinite ({_non_finite(content)}); nothing was saved.",
            RUNTIME_FAILURE,
        ) from None
    path.write_text(text + "\n", encoding="utf-8")


def _non_finite(content, where: str = "") -> str:
    """The first key path of ``content`` whose number is NaN or infinite."""
    items = content.items() if isinstance(content, dict) else enumerate(content) if isinstance(content, list) else ()
    for key, value in items:
        inner = f"{where}.{key}" if where else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            return inner
        found = _non_finite(value, inner)
        if found:
            return found
    return ""


PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "tokenizers",
    "accelerate",
    "safetensors",
    "numpy",
    "pandas",
)


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for piece in iter(lambda: stream.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def input_files(paths) -> dict:
    """{path: {bytes, sha256}} of every file among ``paths`` (directories: the files in them, recursively)."""
    files = {}
    for given in paths:
        path = Path(given)
        found = (
            sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        )
        for file in found:
            size, digest = textfiles.read_digest(file)  # as the run read it, not as the file is now
            files[str(file)] = {"bytes": size, "sha256": digest}
    return files


def write_manifest(path: Path, config, resolved: dict, inputs, timing: Optional[dict] = None) -> None:
    """manifest.json: what it takes to rerun and check a run.

    The exact command, every setting as given and as resolved (learning rate, device, columns, ...),
    the seed, the version of Python, plm and each library, the size and sha256 of every input
    file (data files, corpus files, a local base model's files), how long training took (kept
    here, so that metrics.json is the same for the same seed and data), and the size and sha256 of
    every file written beside it before it. An evaluation report has one too (without seed or timing):
    it is how ``--overwrite`` knows a directory is plm's (``outputs.plm_wrote``).
    """
    versions = {"python": platform.python_version(), "plm": __version__}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    settings = {key: value for key, value in asdict(config).items() if key != "command"}
    write_json(
        path,
        {
            "command": getattr(config, "command", None) or [sys.executable, "(Python API)"],
            "settings": settings,
            "resolved": resolved,
            "seed": getattr(config, "seed", None),
            "versions": versions,
            "platform": platform.platform(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timing": timing or {},
            "inputs": input_files(inputs),
            "files": {
                item.name: {"bytes": item.stat().st_size, "sha256": file_digest(item)}
                for item in sorted(path.parent.iterdir())
                if item.is_file() and item != path
            },
        },
    )


def _metrics_table(report: dict) -> str:
    thresholds = all("threshold" in row for row in report["per_class"].values())
    lines = [
        "| label | precision | recall | F1 | support |" + (" threshold |" if thresholds else ""),
        "|---|---|---|---|---|" + ("---|" if thresholds else ""),
    ]
    for name, row in report["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
            + (f" {row['threshold']:.2f} |" if thresholds else "")
        )
    return "\n".join(lines)


def write_finetune_card(directory: Path, config, base_name: str, labelled, metrics: dict, timing: dict) -> None:
    """A model card that says what the model is, what it was trained on, how well it does, how to use it."""
    validation = metrics["validation"]
    validation_source = config.validation or f"{labelled.validation_share:.0%} of the training file, stratified"
    command = _command(config)
    columns = metrics["columns"]
    multi_label = metrics["task"] == "multi-label"
    pair = f", pair column `{columns['pair']}` (encoded as text pairs)" if columns["pair"] else ""
    if multi_label:
        half = validation["at_threshold_0.5"]
        headline = (
            f"- Micro-F1 **{validation['micro_f1']:.4f}**, macro-F1 **{validation['macro_f1']:.4f}**, subset accuracy "
            f"{validation['subset_accuracy']:.4f}, loss {validation['loss']:.4f}, with each label's threshold tuned "
            f"on this validation set (so these figures are optimistic); at threshold 0.5: micro-F1 "
            f"{half['micro_f1']:.4f}, macro-F1 {half['macro_f1']:.4f}"
        )
        task = (
            f"Multi-label: a row may have several labels, written `a{labelled.label_separator}b`; "
            "each label has its own sigmoid score and threshold."
        )
    else:
        headline = (
            f"- Accuracy **{validation['accuracy']:.4f}**, macro-F1 **{validation['macro_f1']:.4f}**, weighted-F1 "
            f"{validation['weighted_f1']:.4f}, loss {validation['loss']:.4f}"
        )
        task = "Single-label: one label per row (softmax over the labels)."
    weighting = metrics["class_weights"]
    weights = (
        ", ".join(f"`{name}` {w:.3f}" for name, w in weighting["weights"].items()) if weighting["weights"] else "none"
    )
    stopping = ""
    if "early_stopping" in metrics:
        stop = metrics["early_stopping"]
        stopping = (
            f"- Early stopping: patience {stop['patience']} evaluations on {stop['metric']}; the best model "
            f"(step {stop['best_step']}, {stop['metric']} {stop['best_value']:.4f}) is the one saved; training "
            f"ended at step {stop['last_step']} of {stop['planned_steps']}\n"
        )
    use = (
        f"plm predict --model {config.output} --file pairs.csv   # columns {columns['text']}, {columns['pair']}"
        if columns["pair"]
        else f'plm predict --model {config.output} "some text"'
    )
    text = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [plm, text-classification]
---

# Text classifier fine-tuned with plm

A `BertForSequenceClassification`-style model fine-tuned from **{base_name}** by plm {__version__}.

Lineage: {" -> ".join(metrics["lineage"])}

## Data
- Training file: `{config.data}` ({metrics["train"]["samples"]} rows used), text column `{columns["text"]}`{pair}, \
label column `{columns["label"]}`
- Validation: {validation_source} ({metrics["validation_samples"]} rows)
- Labels ({len(labelled.label_names)}): {", ".join(f"`{name}`" for name in labelled.label_names)}
- {task}
{vocabulary.card_line(metrics.get("vocabulary"))}
## Training
- Command: `{command}`
- Epochs {config.epochs}, batch size {config.batch_size}, learning rate {metrics["train"]["learning_rate"]:g}, \
max length {metrics["max_length"]}, seed {config.seed}, {metrics["device"]}, {metrics["precision"]} \
({metrics["precision_reason"]})
- Class weights: {weights} ({weighting["reason"]})
{stopping}- {metrics["train"]["steps"]} steps in {timing["runtime_seconds"]} s \
({timing["samples_per_second"]} samples/s), final training loss {metrics["train"]["loss"]:.4f}
- Texts longer than {metrics["max_length"]} tokens: {metrics["truncated_texts"]["train"]} in training and \
{metrics["truncated_texts"]["validation"]} in validation, truncated
- Everything needed to rerun it (settings, versions, sha256 of the inputs): `manifest.json`

## Validation metrics
{headline}
{_warning_line(validation)}

{_metrics_table(validation)}
{_scores_section(validation)}
## Use
```
{use}
```
```python
from transformers import pipeline
classify = pipeline("text-classification", model="{config.output}")
```
"""
    (directory / "README.md").write_text(text, encoding="utf-8")


def write_regression_card(directory: Path, config, base_name: str, metrics: dict, timing: dict) -> None:
    """A model card for a regressor: data and target, training, validation figures in the target's units, use."""
    validation, target, columns = metrics["validation"], metrics["target"], metrics["columns"]
    validation_source = config.validation or f"{config.validation_split:.0%} of the training file, at random"
    pair = f", pair column `{columns['pair']}` (encoded as text pairs)" if columns["pair"] else ""
    stopping = ""
    if "early_stopping" in metrics:
        stop = metrics["early_stopping"]
        stopping = (
            f"- Early stopping: patience {stop['patience']} evaluations on {stop['metric']}; the best model "
            f"(step {stop['best_step']}, {stop['metric']} {stop['best_value']:.4f}) is the one saved\n"
        )
    text = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [plm, text-regression]
---

# Text regressor fine-tuned with plm

A `BertForSequenceClassification`-style model with one output (`problem_type: regression`) fine-tuned
from **{base_name}** by plm {__version__}. It predicts `{target["column"]}` from text.

Lineage: {" -> ".join(metrics["lineage"])}

## Data
- Training file: `{config.data}` ({metrics["train"]["samples"]} rows used), text column `{columns["text"]}`{pair}, \
target column `{target["column"]}` (from {target["min"]:g} to {target["max"]:g})
- Validation: {validation_source} ({metrics["validation_samples"]} rows)
- The target is standardised for training with the training rows' mean {target["mean"]:.6g} and standard \
deviation {target["std"]:.6g} (saved in `config.json` as `plm.target_scale`); the raw model output times the \
standard deviation plus the mean is the value in the target's units
{vocabulary.card_line(metrics.get("vocabulary"))}
## Training
- Command: `{_command(config)}`
- Epochs {config.epochs}, batch size {config.batch_size}, learning rate {metrics["train"]["learning_rate"]:g}, \
max length {metrics["max_length"]}, seed {config.seed}, {metrics["device"]}, {metrics["precision"]} \
({metrics["precision_reason"]}), MSE loss on the standardised target
{stopping}- {metrics["train"]["steps"]} steps in {timing["runtime_seconds"]} s \
({timing["samples_per_second"]} samples/s), final training loss {metrics["train"]["loss"]:.4f}
- Everything needed to rerun it (settings, versions, sha256 of the inputs): `manifest.json`

## Validation metrics (in the target's units)
| RMSE | MAE | MSE | Pearson | Spearman | R² |
|---|---|---|---|---|---|
| {validation["rmse"]:.4f} | {validation["mae"]:.4f} | {validation["mse"]:.4f} | {validation["pearson"]:.4f} | \
{validation["spearman"]:.4f} | {validation["r2"]:.4f} |
{_warning_line(validation)}

## Use
```
plm predict --model {config.output} "some text"      # a value in the target's units
plm evaluate --model {config.output} test.csv
```
"""
    (directory / "README.md").write_text(text, encoding="utf-8")


def baseline_warning(validation: dict) -> Optional[str]:
    """A warning when the validation figures are no better than one constant answer's, else None.

    Single-label: accuracy at most the share of the most frequent label (``majority_baseline``);
    regression: R² at most 0, no better than always answering the mean.
    """
    majority = validation.get("majority_baseline")
    if majority is not None and validation["accuracy"] <= majority["accuracy"]:
        constant = f"always answering '{console.printable(majority['label'])}' ({majority['accuracy']:.4f})"
        figure = f"accuracy {validation['accuracy']:.4f}"
    elif "r2" in validation and validation["r2"] <= 0:
        constant, figure = "always answering the mean (R² 0)", f"R² {validation['r2']:.4f}"
    else:
        return None
    return (
        f"Warning: validation {figure} is no better than {constant}: the model has learned nothing useful. "
        "Try a lower --lr, more epochs or more data."
    )


CALIBRATION_FIGURES = ("ece", "nll", "brier", "mean_top_score", "accuracy")


def _scores_section(validation: dict) -> str:
    """The card's words on what a single-label score means, and how well it did on validation."""
    calibration = validation.get("calibration")
    if calibration is None:
        return ""
    before, after = calibration["before"], calibration["after"]
    if calibration["fitted_on"] is None:
        meaning = (
            "Scores are the raw softmax of the logits (`--calibration none`, or a validation set with no error "
            "to fit a temperature on): they need not match accuracy."
        )
    else:
        meaning = (
            f"Scores are calibrated: the logits are divided by a temperature of {calibration['temperature']:.4g} "
            "(fitted on the validation set, saved as `plm.temperature` in `config.json` and applied by `plm "
            "predict`, `evaluate` and `serve`), so that among texts scored about 0.8, about 80% are right. "
            "Labels are the same as without it."
        )
        if calibration.get("top_score_map"):
            found = calibration["top_score_map"]
            meaning += (
                f" Then the top score s is mapped by beta calibration (`--calibration beta`, saved as "
                f"`plm.top_score_map`): logit(s') = {found['a']:.3g} ln s - {found['b']:.3g} ln(1 - s) "
                f"{found['c']:+.3g}, fitted on the same rows; higher scores stay higher, and the other labels "
                "share 1 - s' in the ratios they had."
            )
    rows = "\n".join(
        f"| {name} calibration | " + " | ".join(f"{figures[key]:.4f}" for key in CALIBRATION_FIGURES) + " |"
        for name, figures in (("before", before), ("after", after))
    )
    return f"""
## What the scores mean
{meaning}

| on the validation set | ECE (15 bins) | NLL | Brier | mean top score | accuracy |
|---|---|---|---|---|---|
{rows}

The figures after calibration are measured on the rows the temperature was fitted on, so they are optimistic;
`plm evaluate` on other labelled data gives the honest figure and draws the same `reliability.png`.

To leave uncertain texts to a person, `plm predict --min-score S` gives no label (or `--abstain-label`) to
rows whose top score is below S and can write them to `--review-file`. To choose S, run `plm evaluate` on
held-out labelled data: its coverage table gives the accuracy and the share of rows answered at each
threshold, and `--target-accuracy A` names the lowest S that reaches A.
"""


def _warning_line(validation: dict) -> str:
    """The card's line for ``baseline_warning``, in bold; empty when there is none."""
    warning = baseline_warning(validation)
    return f"\n**{warning}**\n" if warning else ""


def _command(config) -> str:
    return " ".join(shlex.quote(part) for part in config.command) if config.command else "(Python API)"


def _whole_words(metrics: dict) -> str:
    if not metrics["whole_word_mask"]:
        return "off"
    segmenter = metrics.get("word_segmenter")
    return f"on (words segmented by {segmenter})" if segmenter else "on"


def _extension_line(extension: Optional[dict]) -> str:
    if not extension:
        return ""
    return (
        f"- Vocabulary extended (`--extend-vocab`) with {extension['added_tokens']} characters the base model read as "
        f"[UNK] (first: {' '.join(extension['first_added'])}); [UNK] share of the corpus "
        f"{extension['unknown_share_before']:.2%} before, {extension['unknown_share_after']:.2%} after\n"
    )


def write_pretrain_card(directory: Path, config, metrics: dict, timing: dict) -> None:
    """A model card for a pretrain run: base model, corpus, objective, held-out evidence, lineage, use."""
    before, after = metrics["validation"]["before"], metrics["validation"]["after"]
    train, text = metrics["train"], metrics["corpus"]
    architecture = "BertForPreTraining" if metrics["objective"] == "mlm+nsp" else "BertForMaskedLM"
    nsp = (
        f"| NSP accuracy | {before['nsp_accuracy']:.4f} | {after['nsp_accuracy']:.4f} |\n"
        if "nsp_accuracy" in after
        else ""
    )
    text_sources = ", ".join(f"`{name}`" for name in text["sources"][:10]) + (
        f" and {len(text['sources']) - 10} more" if len(text["sources"]) > 10 else ""
    )
    card = f"""---
library_name: transformers
pipeline_tag: fill-mask
tags: [plm, fill-mask, bert]
---

# Masked-language model pretrained with plm

A `{architecture}` {"trained from scratch" if metrics["from_scratch"] else "whose pretraining was continued"} \
from **{metrics["base_model"]}** by plm {__version__}.

Lineage: {" -> ".join(metrics["lineage"])}

## Corpus
- {text_sources}: {text["documents"]} documents, {text["lines"]} lines, {text["tokens"]} tokens
- Examples: {train["examples"]} training and {metrics["validation"]["examples"]} held-out {metrics["examples"]} \
of up to {metrics["max_length"]} tokens
{_extension_line(metrics.get("extended_vocabulary"))}{vocabulary.card_line(metrics.get("vocabulary"))}
## Training
- Command: `{_command(config)}`
- Objective {metrics["objective"]}, mask probability {metrics["mlm_probability"]}, whole-word masking \
{_whole_words(metrics)}
- {train["steps"]} steps of batch {train["batch_size"]}, learning rate {train["learning_rate"]:g}, seed \
{metrics["seed"]}, {metrics["device"]}, {metrics["precision"]} ({metrics["precision_reason"]})
- {timing["runtime_seconds"]} s, {timing["tokens_per_second"]} tokens/s, final training loss {train["loss"]:.4f}

## Held-out evidence (the same masked inputs before and after)
| | before | after |
|---|---|---|
| masked-LM loss | {before["loss"]:.4f} | {after["loss"]:.4f} |
| perplexity | {before["perplexity"]:.2f} | {after["perplexity"]:.2f} |
| masked-token accuracy | {before["accuracy"]:.4f} | {after["accuracy"]:.4f} |
{nsp}
## Use
```
plm fill-mask --model {config.output} "the movie was [MASK] ."
plm finetune labels.csv --model {config.output}
```
```python
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained("{config.output}")
```
"""
    (directory / "README.md").write_text(card, encoding="utf-8")


def _short(name: str, most: int = 28) -> str:
    """A label name short enough for an axis: long names keep their start and end."""
    return name if len(name) <= most else name[: most - 11] + "..." + name[-8:]


@contextmanager
def _pyplot():
    """matplotlib's pyplot on the headless backend; a character the font lacks (an emoji in a label) is drawn
    as a box without a warning on stderr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        yield plt


def _finish(plt, figure, axes, path: Path, title: str, legend: str) -> None:
    """A plot's title (its end, when long), grid and legend, written as a PNG and closed."""
    axes.set_title(title if len(title) <= 60 else "..." + title[-57:], fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc=legend)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_confusion_matrix(
    path: Path,
    matrix: list[list[int]],
    label_names: list[str],
    title: str,
    predicted_names: Optional[list[str]] = None,
) -> None:
    """A confusion matrix PNG: counts in each cell, colour by the share of each true label's rows.

    ``predicted_names`` name the columns when they differ from the rows (multi-label: the labels
    and '(none)').
    """
    import numpy as np

    with _pyplot() as plt:
        columns = predicted_names or label_names
        counts = np.asarray(matrix)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # (true, predicted), rows sum to 1
        size = min(4 + 0.6 * len(columns), 20)
        figure, axes = plt.subplots(figsize=(size, size * 0.85))
        axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(
            range(len(columns)), [_short(name) for name in columns], rotation=45 if len(columns) > 4 else 0, ha="right"
        )
        axes.set_yticks(range(len(label_names)), [_short(name) for name in label_names])
        axes.set_xlabel("predicted label")
        axes.set_ylabel("true label")
        axes.set_title(title if len(title) <= 70 else "..." + title[-67:], fontsize=10)
        for true, predicted in np.ndindex(counts.shape):
            colour = "white" if shares[true, predicted] > 0.5 else "black"
            axes.text(predicted, true, str(counts[true, predicted]), ha="center", va="center", color=colour)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)


def plot_entity_errors(path: Path, report: dict, title: str) -> None:
    """A token classifier's entity F1 per type and its errors by kind (an entity report's), side by side."""
    with _pyplot() as plt:
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        types = list(report["per_type"])
        left.barh([_short(name) for name in types], [report["per_type"][name]["f1"] for name in types])
        left.set_xlim(0, 1)
        left.set_xlabel("entity F1 (strict)")
        kinds = ["wrong_type", "wrong_boundary", "missed", "spurious"]
        right.barh([kind.replace("_", " ") for kind in kinds], [report["errors"][kind] for kind in kinds], color="C3")
        right.set_xlabel("entities")
        figure.suptitle(title if len(title) <= 70 else "..." + title[-67:], fontsize=10)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)


def plot_loss_curve(
    path: Path,
    log_history: list[dict],
    final_validation_loss: float,
    final_step: int,
    initial_validation_loss: Optional[float] = None,
    best_step: Optional[int] = None,
) -> None:
    """Training loss by step (from the Trainer's log history) with validation loss at each evaluation.

    ``final_validation_loss`` is the kept model's, at ``final_step``; ``best_step`` (early stopping)
    marks the evaluation whose model was kept.
    """
    with _pyplot() as plt:
        train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
        validation = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and e["step"] != final_step]
        validation = sorted([*validation, (final_step, final_validation_loss)])
        if initial_validation_loss is not None:
            validation.insert(0, (0, initial_validation_loss))
        figure, axes = plt.subplots(figsize=(7, 4.5))
        if train:
            axes.plot(*zip(*train), marker=".", label="training loss")
        axes.plot(*zip(*validation), marker="o", label="validation loss")
        if best_step is not None:
            axes.axvline(best_step, color="grey", linestyle="--", label=f"best model kept (step {best_step})")
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)


def plot_reliability(path: Path, before, after, labels, title: str) -> None:
    """A reliability diagram: accuracy against mean top score per bin, before and after calibration.

    A marker's area grows with its bin's rows, so a bin of a few rows far from the diagonal reads as the
    noise it is.
    """
    from plmcli import calibration

    with _pyplot() as plt:
        figure, axes = plt.subplots(figsize=(5.5, 5.5))
        axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="scores that mean what they say")
        for probabilities, name, marker in ((before, "before", "o"), (after, "after", "s")):
            points = calibration.reliability(probabilities, labels)
            ece = calibration.expected_calibration_error(probabilities, labels)
            scores, accuracies, rows = zip(*points)
            (line,) = axes.plot(scores, accuracies, label=f"{name} calibration (ECE {ece:.3f})")
            sizes = [12 + 150 * count / len(labels) for count in rows]
            axes.scatter(scores, accuracies, s=sizes, marker=marker, color=line.get_color(), zorder=3)
        axes.text(0.98, 0.02, "marker area: rows in the bin", ha="right", fontsize=7, color="grey")
        axes.set_xlabel("mean top score in the bin")
        axes.set_ylabel("accuracy in the bin")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        _finish(plt, figure, axes, path, title, "upper left")


def plot_coverage(path: Path, probabilities, labels, table: list[dict], title: str) -> None:
    """Accuracy of the most confident rows against the share answered, the coverage table's points marked."""
    import numpy as np

    from plmcli import calibration

    confidence, correct = calibration.ranked(probabilities, labels)
    shares = [(count + 1) / len(correct) for count in range(len(correct))]
    with _pyplot() as plt:
        figure, axes = plt.subplots(figsize=(6, 4.5))
        axes.plot(shares, np.cumsum(correct) / np.arange(1, len(correct) + 1), label="most confident rows first")
        axes.scatter([row["coverage"] for row in table], [row["accuracy"] for row in table], zorder=3)
        for row in table:
            axes.annotate(
                f"score >= {row['min_score']:.2f}",
                (row["coverage"], row["accuracy"]),
                fontsize=7,
                xytext=(4, -10),
                textcoords="offset points",
            )
        axes.set_xlabel("share of rows answered")
        axes.set_ylabel("accuracy of the rows answered")
        axes.set_xlim(0, 1.02)
        _finish(plt, figure, axes, path, title, "lower left")


def plot_scatter(path: Path, true, predicted, target: str, title: str) -> None:
    """Predicted against true values, with the diagonal where a perfect model's points lie."""
    import numpy as np

    with _pyplot() as plt:
        true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
        low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
        figure, axes = plt.subplots(figsize=(5.5, 5.5))
        axes.scatter(true, predicted, s=8, alpha=0.5)
        axes.plot([low, high], [low, high], color="grey", linestyle="--", label="predicted = true")
        axes.set_xlabel(f"true {_short(target)}")
        axes.set_ylabel(f"predicted {_short(target)}")
        _finish(plt, figure, axes, path, title, "best")


def plot_tuning(path: Path, trials: list[dict], metric: str, direction: str) -> None:
    """plm tune's trials: each one's validation ``metric`` (pruned ones at their last epoch) and the best so far."""
    with _pyplot() as plt:
        figure, axes = plt.subplots(figsize=(6.4, 4))
        done = [t for t in trials if t["state"] == "COMPLETE"]
        pruned = [t for t in trials if t["state"] == "PRUNED" and t["values_per_epoch"]]
        axes.scatter([t["number"] for t in done], [t["value"] for t in done], label="trial", zorder=3)
        if pruned:
            axes.scatter(
                [t["number"] for t in pruned],
                [t["values_per_epoch"][-1] for t in pruned],
                marker="x",
                color="grey",
                label="pruned (last epoch)",
                zorder=3,
            )
        best, line = None, []
        for trial in sorted(done, key=lambda t: t["number"]):
            better = best is None or (trial["value"] < best if direction == "minimize" else trial["value"] > best)
            best = trial["value"] if better else best
            line.append((trial["number"], best))
        if line:
            axes.step(*zip(*line), where="post", color="C1", label="best so far")
        axes.set_xlabel("trial")
        axes.set_ylabel(f"validation {metric}")
        _finish(plt, figure, axes, path, f"plm tune: {len(trials)} trials", "best")

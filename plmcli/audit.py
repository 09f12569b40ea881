"""`plm audit`: rank the rows of a labelled file whose label is likely wrong (confident learning).

The file's rows are split into K folds, stratified by label. Each fold is one run of the
classification task (``plmcli.run.execute``, finetune's settings and defaults): a model trained on
the other folds predicts the fold held out, so every row gets a probability vector from a model
that never saw it. cleanlab's ``find_label_issues`` (the field's implementation of confident
learning, Northcutt et al. 2021) flags the rows whose given label those probabilities contradict
beyond what each class's own noise rate explains, ranked by self-confidence (the probability
of the given label) or normalised margin.

Finished folds are kept under ``OUTPUT/checkpoints/fold-N`` (their out-of-fold logits, not their
weights) until the audit is written, so an interrupted audit continues with ``--resume`` from the
fold it was in (from that fold's last checkpoint). The report replaces them in one rename.
"""

import gc
import hashlib
import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import checkpoints, console, data, reporting, textfiles
from plmcli.config import AuditConfig, FinetuneConfig, resume_settings
from plmcli.errors import RUNTIME_FAILURE, Interrupted, PlmError
from plmcli.outputs import check_output_dir, check_output_file, check_places, claimed, staged_dir, staged_file, writing
from plmcli.run import execute
from plmcli.tasks.base import Built, Finished
from plmcli.tasks.classification import ClassificationTask

FOLD_RESULT = "out_of_fold.json"  # what a finished fold keeps: its rows and their logits
SHOWN = 10  # suspects in the summary


@dataclass
class Table:
    """The audited file: every row as read, and the rows that have a text (a pair) and a label."""

    frame: object  # pandas.DataFrame: every row and column of the file, as text
    columns: data.Columns
    rows: list[int]  # 0-based positions in ``frame`` of the labelled rows (row number in the file - 1)
    texts: list[str]
    pairs: Optional[list[str]]
    labels: np.ndarray  # label ids, into label_names
    label_names: list[str]


@dataclass
class AuditResult:
    output: Path
    metrics: dict
    suspects: list[dict]  # most suspect first
    shown: list[dict]  # the first SHOWN suspects, with their text
    fix_out: Optional[Path]
    timing: dict


def read(config: AuditConfig) -> Table:
    """The labelled rows of ``config.data``; refused when a label has a single row (no fold could learn it)."""
    frame = data.read_table(config.data, config.encoding)
    columns = data.detect_columns(
        frame, config.data, config.text_column, config.label_column, pair_column=config.text_pair_column
    )
    found = data.labelled_rows(frame, columns, None, config.data, config.encoding, config.drop_invalid)
    if found.kept and len(found.kept) < len(frame):
        console.warn(f"--drop-invalid: skipped {len(frame) - len(found.kept)} rows with an empty text or label.")
    names = data.sort_labels(set(found.labels))
    if len(names) < 2:
        raise PlmError(
            f"{config.data} has {len(names)} label{'' if len(names) == 1 else 's'} in column '{columns.label}'; "
            "a classifier needs at least 2. Check --label-column."
        )
    counts = {name: 0 for name in names}
    for label in found.labels:
        counts[label] += 1
    single = [name for name, count in counts.items() if count == 1]
    if single:
        raise PlmError(
            f"{data.quote_labels(single)} {'has' if len(single) == 1 else 'have'} a single row in {config.data}: "
            "no fold can learn a label while its only row is held out. Fix or drop such rows."
        )
    if len(found.texts) < config.folds:
        raise PlmError(f"{config.data} has {len(found.texts)} labelled rows, fewer than --folds {config.folds}.")
    label2id = {name: i for i, name in enumerate(names)}
    return Table(
        frame=frame,
        columns=columns,
        rows=found.kept,
        texts=found.texts,
        pairs=found.pairs,
        labels=np.array([label2id[label] for label in found.labels]),
        label_names=names,
    )


def assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0-based): every label's rows shuffled with ``seed`` and dealt round the folds in turn.

    Each label's rows in two folds differ in number by at most one, and so do the folds' sizes.
    """
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold_of[rows] = (start + np.arange(len(rows))) % folds
        start = (start + len(rows)) % folds
    return fold_of


class FoldTask(ClassificationTask):
    """One fold of an audit: train on the other folds, predict the held-out rows (in their order), keep no weights."""

    def __init__(self, config: FinetuneConfig, table: Table, held: np.ndarray, fold: int, folds: int, key: str):
        super().__init__(config)
        self.table, self.held, self.fold, self.folds, self.key = table, held, fold, folds, key

    def read(self) -> None:
        table, held = self.table, set(self.held.tolist())
        train = [i for i in range(len(table.texts)) if i not in held]

        def pick(values, rows):
            return None if values is None else [values[i] for i in rows]

        self.labelled = data.ClassificationData(
            train_texts=pick(table.texts, train),
            train_labels=table.labels[train].tolist(),
            validation_texts=pick(table.texts, self.held),
            validation_labels=table.labels[self.held].tolist(),
            label_names=table.label_names,
            columns=table.columns,
            dropped_rows=0,
            train_pairs=pick(table.pairs, train),
            validation_pairs=pick(table.pairs, self.held),
        )
        self.lineage_step = f"audit fold {self.fold + 1} of {self.folds} on {self.config.data}"
        console.info(
            f"Fold {self.fold + 1} of {self.folds}: training on {len(train)} rows, "
            f"predicting the {len(held)} held out."
        )

    def training_arguments(self) -> dict:
        # No evaluation each epoch: the held-out fold is predicted once, at the end.
        return {**super().training_arguments(), "eval_strategy": "no"}

    def finish(self, trainer, train_output, built: Built, device: str, precision: str) -> Finished:
        from plmcli import metrics as scoring
        from plmcli.inference import batched_logits

        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        model.eval()
        held = built.eval_set
        types = held["token_type_ids"] if "token_type_ids" in held.column_names else None
        self.logits = batched_logits(
            held["input_ids"], types, built.tokenizer, model, self.config.batch_size * 2, device, "fp32"
        )
        if not np.isfinite(self.logits).all():
            raise PlmError(
                f"fold {self.fold + 1}'s model gives NaN or infinite outputs: training diverged. "
                f"Try a lower --lr (this run used {built.lr:g}).",
                RUNTIME_FAILURE,
            )
        report = scoring.classification_report(self.logits.argmax(-1), held["labels"], self.table.label_names)
        metrics = {
            "fold": self.fold + 1,
            "rows": len(self.held),
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "train": {"samples": len(built.train_set), "loss": trainer.plm_training_loss},
        }
        timing = {"runtime_seconds": round(train_output.metrics["train_runtime"], 2)}
        return Finished(metrics=metrics, timing=timing)

    def save_model(self, staging: Path, model, tokenizer) -> None:
        pass  # the fold's model has done its job once it has predicted the held-out rows

    def write(self, staging: Path, trainer, built: Built, metrics: dict, timing: dict) -> None:
        result = {"key": self.key, "held": self.held.tolist(), "logits": self.logits.tolist()}
        (staging / FOLD_RESULT).write_text(json.dumps(result), encoding="utf-8")


def audit(config: AuditConfig) -> AuditResult:
    """Cross-validate, rank the likely label errors with cleanlab, and write the report to ``config.output``."""
    with textfiles.recording():  # the folds, the manifest and --fix-out see the data as it was first read
        return _audit(config)


def _audit(config: AuditConfig) -> AuditResult:
    filters = _cleanlab()
    check_places(config.places())
    output = check_output_dir(config.output, config.overwrite, resume=config.resume)
    fix_out = check_output_file(config.fix_out, config.overwrite, "--fix-out") if config.fix_out else None
    table = read(config)
    console.info(
        f"Data: {len(table.texts)} rows; text column '{table.columns.text}'"
        + (f", pair column '{table.columns.pair}'" if table.columns.pair else "")
        + f", label column '{table.columns.label}'; {len(table.label_names)} labels; {config.folds} folds."
    )
    fold_of = assign_folds(table.labels, config.folds, config.seed)
    with claimed(output) as claim:
        store = checkpoints.run_dir(output)
        if config.resume and not _started(store):
            raise PlmError(
                f"nothing to resume: {config.output} holds no unfinished audit. Run again without --resume."
            )
        if not config.resume:
            shutil.rmtree(store, ignore_errors=True)  # --overwrite: the folds of an earlier audit are not reused
        logits = np.zeros((len(table.texts), len(table.label_names)), dtype=np.float32)
        per_fold, seconds = [], 0.0
        for fold in range(config.folds):
            held = np.flatnonzero(fold_of == fold)
            try:
                result = _fold(config, table, held, fold, store / f"fold-{fold + 1}")
            except Interrupted as stop:
                raise Interrupted(stop.exit_code - 128, "signal", _stopped_message(config, fold, str(stop))) from None
            logits[held] = result["logits"]
            per_fold.append(result["metrics"])
            seconds += result["seconds"]
            gc.collect()  # the fold's model and optimizer state go before the next one is built
        report = rank(filters, table, logits, fold_of, config.rank_by)
        metrics = _metrics(config, table, report, per_fold)
        timing = {"training_seconds": round(seconds, 2)}
        with staged_dir(claim) as staging:
            with writing(output):
                _write(staging, config, table, report, metrics, timing)
                if fix_out is not None:
                    _write_fixed(fix_out, config, table, report["flagged"])
    shown = [suspect | {"text": table.texts[i]} for suspect, i in zip(report["suspects"][:SHOWN], report["flagged"])]
    return AuditResult(output, metrics, report["suspects"], shown, fix_out, timing)


def _cleanlab():
    """cleanlab's filter module, or one line naming the extra that installs it."""
    try:
        from cleanlab import filter as filters
    except ImportError:
        raise PlmError("plm audit needs cleanlab: pip install 'plm[audit]' (or pip install cleanlab).") from None
    return filters


def _started(store: Path) -> bool:
    return store.is_dir() and any(store.glob("fold-*"))


def _stopped_message(config: AuditConfig, fold: int, reason: str) -> str:
    """What an interrupted audit kept, and how to continue it."""
    kept = f"{fold} finished fold{'' if fold == 1 else 's'} kept" if fold else "no fold finished yet"
    if "Continue with:" in reason:  # the fold's training saved a checkpoint, and says how to continue
        return f"{reason} ({kept})"
    store = checkpoints.run_dir(Path(config.output))
    return f"{reason.rstrip('.')}; {kept} in {store}. Continue with the same command and --resume."


def _fold(config: AuditConfig, table: Table, held: np.ndarray, fold: int, directory: Path) -> dict:
    """One fold's out-of-fold logits and figures: read back from a finished fold, or from a run of ``FoldTask``."""
    settings = {item.name: getattr(config, item.name) for item in fields(FinetuneConfig)}
    resumed = config.resume and bool(checkpoints.listed(checkpoints.run_dir(directory)))
    fold_config = FinetuneConfig(
        **{
            **settings,
            "output": str(directory),
            "overwrite": not resumed,
            "resume": resumed,
            "allow_changed_settings": config.allow_changed_settings and resumed,
            "calibration": "none",  # raw out-of-fold scores: no held-out label takes part in them
        }
    )
    key = _key(fold_config, table, held, fold)
    finished = _finished(directory, key, fold, config)
    if finished is not None:
        console.info(f"Fold {fold + 1} of {config.folds}: finished in an earlier run; reusing its predictions.")
        return finished
    if not resumed:
        shutil.rmtree(directory, ignore_errors=True)  # what a fold stopped before its first checkpoint left
    task = FoldTask(fold_config, table, held, fold, config.folds, key)
    result = execute(task)
    return {"logits": task.logits, "metrics": result.metrics, "seconds": result.timing["runtime_seconds"]}


def _key(fold_config: FinetuneConfig, table: Table, held: np.ndarray, fold: int) -> str:
    """What a finished fold must match to be reused: the data, the training settings and the rows held out."""
    settings = resume_settings(fold_config, data_sha256=textfiles.read_digest(Path(fold_config.data))[1])
    content = json.dumps({"settings": settings, "fold": fold, "held": held.tolist()}, sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()


def _finished(directory: Path, key: str, fold: int, config: AuditConfig) -> Optional[dict]:
    """A finished fold's results when it was run with these settings; None when it has not finished."""
    path = directory / FOLD_RESULT
    if not config.resume or not (directory / "manifest.json").is_file() or not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
        seconds = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))["timing"]["runtime_seconds"]
    except (OSError, ValueError, KeyError) as exc:
        raise PlmError(
            f"fold {fold + 1} in {directory} is unreadable ({exc}); start again with --overwrite."
        ) from None
    if result.get("key") != key:
        raise PlmError(
            f"fold {fold + 1} in {directory} was run with other data or settings; start again with --overwrite."
        )
    return {"logits": np.asarray(result["logits"], dtype=np.float32), "metrics": metrics, "seconds": seconds}


def rank(filters, table: Table, logits: np.ndarray, fold_of: np.ndarray, rank_by: str) -> dict:
    """cleanlab's flagged rows, most suspect first, and every row's out-of-fold figures."""
    from cleanlab.count import num_label_issues

    from plmcli.calibration import softmax

    probabilities = softmax(logits).astype(np.float64)
    labels = table.labels
    flagged = filters.find_label_issues(labels, probabilities, return_indices_ranked_by=rank_by, n_jobs=1)
    estimated = int(num_label_issues(labels, probabilities))
    suggested = probabilities.argmax(-1)
    names = table.label_names

    def entry(i: int) -> dict:
        return {
            "row": table.rows[i] + 1,
            "given_label": names[labels[i]],
            "suggested_label": names[suggested[i]],
            "self_confidence": float(probabilities[i, labels[i]]),
            "suggested_score": float(probabilities[i, suggested[i]]),
        }

    return {
        "flagged": [int(i) for i in flagged],
        "suspects": [entry(int(i)) for i in flagged],
        "every_row": [entry(i) | {"fold": int(fold_of[i]) + 1} for i in range(len(labels))],
        "probabilities": probabilities,
        "estimated_errors": estimated,
    }


def _spread(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4), "folds": values}


def _metrics(config: AuditConfig, table: Table, report: dict, per_fold: list[dict]) -> dict:
    """metrics.json: cross-validated figures (against the labels as given), the suspects, the estimated error share."""
    rows = len(table.texts)
    per_class = {name: 0 for name in table.label_names}
    for suspect in report["suspects"]:
        per_class[suspect["given_label"]] += 1
    return {
        "task": "audit",
        "rows": rows,
        "labels": table.label_names,
        "folds": config.folds,
        "rank_by": config.rank_by,
        "cross_validation": {
            "accuracy": _spread([fold["accuracy"] for fold in per_fold]),
            "macro_f1": _spread([fold["macro_f1"] for fold in per_fold]),
            "measured_against": "the labels as given (errors in them count against the model)",
        },
        "suspects": {
            "count": len(report["suspects"]),
            "share": round(len(report["suspects"]) / rows, 4),
            "per_class": per_class,
        },
        "estimated_label_errors": {
            "count": report["estimated_errors"],
            "share": round(report["estimated_errors"] / rows, 4),
            "method": "cleanlab.count.num_label_issues (off-diagonal of the confident joint)",
        },
        "seed": config.seed,
        "device": per_fold[0].get("device"),
        "precision": per_fold[0].get("precision"),
    }


def _with_inputs(entries: list[dict], table: Table) -> tuple[list[dict], list[str]]:
    """The entries with every input column of their row (a column named like one of plm's gets ' (input)')."""
    ours = list(entries[0]) if entries else ["row", "given_label", "suggested_label", "self_confidence"]
    inputs = [(column, f"{column} (input)" if column in ours else column) for column in table.frame.columns]
    records = table.frame.to_dict("records")
    rows = [entry | {name: records[entry["row"] - 1][column] for column, name in inputs} for entry in entries]
    return rows, ours + [name for _, name in inputs]


def _write(staging: Path, config: AuditConfig, table: Table, report: dict, metrics: dict, timing: dict) -> None:
    """suspects.csv, out_of_fold.csv, metrics.json, README.md and manifest.json (last)."""
    from plmcli.formats import to_csv

    columns = ["row", "given_label", "suggested_label", "self_confidence", "suggested_score"]
    suspects, names = _with_inputs(report["suspects"], table)
    (staging / "suspects.csv").write_text(to_csv(suspects, names or columns), encoding="utf-8")
    scores = [f"score: {name}" for name in table.label_names]
    every = [
        entry | dict(zip(scores, map(float, probabilities)))
        for entry, probabilities in zip(report["every_row"], report["probabilities"])
    ]
    flagged = set(report["flagged"])
    for i, entry in enumerate(every):
        entry["flagged"] = "yes" if i in flagged else ""
    every.sort(key=lambda entry: entry["row"])
    head = [*columns, "flagged", "fold", *scores]
    (staging / "out_of_fold.csv").write_text(to_csv(every, head), encoding="utf-8")
    reporting.write_json(staging / "metrics.json", metrics)
    (staging / "README.md").write_text(_readme(config, table, metrics), encoding="utf-8")
    resolved = {
        "text_column": table.columns.text,
        "text_pair_column": table.columns.pair,
        "label_column": table.columns.label,
        "labels": table.label_names,
    }
    reporting.write_manifest(staging / "manifest.json", config, resolved, [config.data], timing)


def _write_fixed(path: Path, config: AuditConfig, table: Table, flagged: list[int]) -> None:
    """The input file's rows without the flagged ones, every column as read, in the format --fix-out's suffix names."""
    from plmcli.formats import ChunkWriter, to_csv

    dropped = {table.rows[i] for i in flagged}
    columns = [str(column) for column in table.frame.columns]
    kept = [record for position, record in enumerate(table.frame.to_dict("records")) if position not in dropped]
    suffix = path.suffix.lower()
    with staged_file(path, config.overwrite) as stream:
        if suffix == ".tsv":
            stream.write(_tsv(kept, columns))
        elif suffix == ".csv":
            stream.write(to_csv(kept, columns))
        else:
            writer = ChunkWriter(stream.write, suffix[1:], columns)
            writer.add(kept)
            writer.close()


def _tsv(rows: list[dict], columns: list[str]) -> str:
    """Rows as tab-separated text, quoted (as csv does) where a field holds a tab, a quote or a line break."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[row[column] for column in columns] for row in rows])
    return buffer.getvalue()


def _readme(config: AuditConfig, table: Table, metrics: dict) -> str:
    cv, suspects, estimated = metrics["cross_validation"], metrics["suspects"], metrics["estimated_label_errors"]
    return f"""# Label audit of {config.data}

{metrics["rows"]} rows, {len(table.label_names)} labels, {config.folds}-fold cross-validation (stratified by
label, seed {config.seed}): every row was predicted by a model trained on the other folds, never on
the row itself.

- Cross-validated accuracy {cv["accuracy"]["mean"]:.4f} (std {cv["accuracy"]["std"]:.4f} over folds), macro-F1
  {cv["macro_f1"]["mean"]:.4f} (std {cv["macro_f1"]["std"]:.4f}), measured against the labels as given.
- **{suspects["count"]} rows flagged** as likely mislabelled ({suspects["share"]:.1%}); cleanlab estimates that
  {estimated["count"]} rows ({estimated["share"]:.1%}) carry a wrong label.

## The files

- `suspects.csv`: the flagged rows, most suspect first (ranked by {config.rank_by.replace("_", " ")}).
  `row` is the row's number in the input file (1 = the first row after the header; a quoted
  cell spanning lines is one row), `given_label` the label in the file, `suggested_label` the
  label the out-of-fold model gives it, `self_confidence` the probability that model gives the
  given label, `suggested_score` the probability of the suggested one; then every input column.
- `out_of_fold.csv`: every row in file order with its fold, its out-of-fold probability for each
  label and whether it was flagged.
- `metrics.json`: the cross-validated figures (each fold's and their mean and standard deviation),
  the number of suspects per given label, and the estimated share of label errors.

## How to use it

Read the suspects from the top: the first ones are the likeliest errors. A flagged row is
either mislabelled (relabel it), ambiguous (decide, or drop it), or correct and hard (keep it:
it is what the model finds difficult). Flags come from out-of-fold probabilities, so they are
only as good as the model: with a weak cross-validated accuracy, expect more correct rows among
them. `plm audit DATA --fix-out cleaned.csv` writes the file without the flagged rows, to retrain on;
compare both models with `plm evaluate` on a test set whose labels you trust.

Flags by cleanlab (`cleanlab.filter.find_label_issues`, confident learning: Northcutt, Jiang and
Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021).
"""

"""Fine-tuning a regressor: one number per text (or text pair), like a rating, a score or a price.

The target is standardised for training, (y - mean) / std with the training rows' mean and
standard deviation, so the MSE loss and the learning rate do not depend on its units; the scale
is saved in config.json (``plm.target_scale``) and predict and evaluate restore values in the
target's own units. The model is a standard ``BertForSequenceClassification`` with one output and
transformers' ``regression`` problem type. Validation reports MSE, RMSE, MAE, Pearson, Spearman
and R² in the target's units, and a scatter plot of predicted against true values.
"""

from pathlib import Path

import numpy as np

from plmcli import data, reporting
from plmcli.tasks.base import Built
from plmcli.tasks.classification import SequenceTask


class RegressionTask(SequenceTask):
    """A sequence model with one output, trained with MSE on the standardised target."""

    problem_type = "regression"

    def load_data(self) -> data.ClassificationData:
        config = self.config
        labelled = data.load_regression(
            config.data,
            config.validation,
            config.validation_split,
            config.seed,
            config.text_column,
            config.label_column,
            config.max_train_samples,
            config.text_pair_column,
            config.encoding,
            config.drop_invalid,
        )
        values = np.asarray(labelled.train_labels, dtype=np.float64)
        size = float(np.abs(values).max())  # scaled first: the squares of the standard deviation never overflow
        self.scale = {"mean": float((values / size).mean() * size), "std": float((values / size).std() * size)}
        return labelled

    def describe_targets(self) -> str:
        values = np.asarray(self.labelled.train_labels)
        return (
            f"target column '{self.labelled.columns.label}' (numbers from {values.min():g} to {values.max():g}, "
            f"mean {self.scale['mean']:.4g}, standard deviation {self.scale['std']:.4g})"
        )

    def targets(self, labels: list) -> list:
        return ((np.asarray(labels, dtype=np.float64) - self.scale["mean"]) / self.scale["std"]).tolist()

    def head_description(self) -> str:
        return "regression head (one output, MSE loss on the standardised target)"

    def resolved_targets(self) -> dict:
        return {"target_scale": self.scale}

    def trainer_metrics(self):
        from plmcli import metrics as scoring

        return scoring.trainer_regression_metrics(self.scale["mean"], self.scale["std"])

    def restore(self, outputs) -> np.ndarray:
        """Standardised outputs (rows, 1) or (rows,) as values in the target's units."""
        return np.asarray(outputs, dtype=np.float64).reshape(-1) * self.scale["std"] + self.scale["mean"]

    def report(self, outputs, references, trainer, built: Built, device: str, precision: str) -> tuple[dict, dict]:
        from plmcli import metrics as scoring

        self.validation_points = (self.restore(references), self.restore(outputs))  # (true, predicted)
        report = scoring.regression_report(self.validation_points[1], self.validation_points[0])
        return report, {"task": "regression", "target_scale": self.scale}

    def task_name(self) -> str:
        return "regression"

    def target_metrics(self) -> dict:
        values = np.asarray(self.labelled.train_labels)
        return {
            "target": {
                "column": self.labelled.columns.label,
                **self.scale,
                "min": float(values.min()),
                "max": float(values.max()),
            },
        }

    def write(self, staging: Path, trainer, built: Built, metrics: dict, timing: dict) -> None:
        reporting.write_regression_card(staging, self.config, built.base_name, metrics, timing)
        self.plot_loss(staging, trainer, metrics)
        true, predicted = self.validation_points
        reporting.plot_scatter(staging / "scatter.png", true, predicted, metrics["target"]["column"], "validation set")

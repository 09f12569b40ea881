"""The use side of sentence-level models (classifiers, multi-label classifiers, regressors).

Their predict, evaluate and serve code is shared (plmcli.prediction, plmcli.evaluation,
plmcli.serving), so this module only points at it; it stays light, as a one-text predict
imports it before torch.
"""

from typing import Optional

from plmcli.errors import PlmError
from plmcli.tasks.base import Use


class SequenceUse(Use):
    """What a sentence-level model (classifier or regressor) does in predict, evaluate, serve and check."""

    def predict(self, config, write=None):
        from plmcli.prediction import predict_texts

        return predict_texts(config, write)

    def evaluate(self, config, claim):
        from plmcli.evaluation import evaluate_sequences
        from plmcli.tasks.token_use import check_data_is_tagged

        if check_data_is_tagged(config.data):
            raise PlmError(
                f"{config.data} holds tagged words (CoNLL), but {config.model} classifies whole texts; evaluate a "
                "token-classification model on it (plm finetune --task token-classification)."
            )
        return evaluate_sequences(config, claim)

    def load(self, config):
        from plmcli.inference import load_for_inference

        return load_for_inference(config, plain_bert=True)

    def warm_up_pairs(self, runner) -> Optional[list[str]]:
        from plmcli.serving import WARM_UP

        return [WARM_UP] if runner.settings.text_pair_column else None

    def request_problem(self, body, runner, config) -> Optional[tuple[int, str]]:
        from plmcli.serving import sequence_request_problem

        return sequence_request_problem(body, runner, config)

    def answers(self, runner, body, outputs, model: str) -> list[dict]:
        from plmcli.serving import sequence_answers

        return sequence_answers(runner, body, outputs, model)

    def describe(self, runner) -> dict:
        from plmcli.serving import describe_sequences

        return describe_sequences(runner)

    def check(self, config) -> dict:
        from plmcli.checking import check

        return check(config)

"""The tasks: each trains a kind of model in the run skeleton (plmcli.run) and owns how that model is used.

- ``classification``: a sequence classifier, single-label, multi-label or on text pairs;
- ``regression``: a numeric target from a text (or pair), standardised for training;
- ``token_classification`` (with ``token_use``): a tag per word, like named entities;
- ``masked_lm``: masked-language-model pretraining (and next-sentence prediction).

A task is registered by one line in ``TRAINING`` (finetune's ``--task``) and one in ``USES``
(the ``ModelSettings.task`` of the models it writes, see plmcli.settings).
"""

import importlib

from plmcli.settings import MULTI_LABEL, REGRESSION, SINGLE_LABEL, TOKEN_CLASSIFICATION

TRAINING = {  # finetune's --task: the task class that trains it
    "classification": "plmcli.tasks.classification:ClassificationTask",
    "regression": "plmcli.tasks.regression:RegressionTask",
    "token-classification": "plmcli.tasks.token_classification:TokenClassificationTask",
}
USES = {  # ModelSettings.task: what predict, evaluate, serve and check run for such a model
    SINGLE_LABEL: "plmcli.tasks.sequence_use:SequenceUse",
    MULTI_LABEL: "plmcli.tasks.sequence_use:SequenceUse",
    REGRESSION: "plmcli.tasks.sequence_use:SequenceUse",
    TOKEN_CLASSIFICATION: "plmcli.tasks.token_use:TokenUse",
}


def _named(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def for_finetune(config):
    """The task `plm finetune` runs for ``config.task``."""
    return _named(TRAINING[config.task])(config)


def use_side(task: str):
    """The use side of a ModelSettings.task."""
    return _named(USES[task])()


def use_of(model: str, allow_pickle: bool = False):
    """The use side of a fine-tuned model directory (or hub id), read from its config before it loads."""
    from plmcli import modeling

    return use_side(modeling.model_settings(model, allow_pickle).task)


def use_of_data(path: str, task: str = ""):
    """The use side whose data ``path`` is: a tagged-words file (CoNLL, ...) is token classification's."""
    from plmcli.tasks.token_use import check_data_is_tagged

    tagged = task == TOKEN_CLASSIFICATION or check_data_is_tagged(path)
    return use_side(TOKEN_CLASSIFICATION if tagged else SINGLE_LABEL)

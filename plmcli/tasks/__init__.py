"""The training tasks that plug into the run skeleton (plmcli.run): one module each.

- ``classification``: a sequence classifier, single-label, multi-label or on text pairs;
- ``regression``: a numeric target from a text (or pair), standardised for training;
- ``masked_lm``: masked-language-model pretraining (and next-sentence prediction).
"""


def for_finetune(config):
    """The task `plm finetune` runs for ``config.task``."""
    if config.task == "regression":
        from plmcli.tasks.regression import RegressionTask

        return RegressionTask(config)
    from plmcli.tasks.classification import ClassificationTask

    return ClassificationTask(config)

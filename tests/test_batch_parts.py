"""training.length_parts: a random batch trained in length-sorted parts is the same step, with less padding."""

import pytest
import torch

from plmcli.training import length_parts

LABELS = 5


def padded_batch(lengths: list[int], seed: int = 0) -> dict:
    """Right-padded input_ids, attention_mask and token labels (-100 on padding) for rows of these lengths."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = torch.randint(5, 50, (len(lengths), width), generator=generator) * mask
    labels = torch.randint(0, LABELS, (len(lengths), width), generator=generator).masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_parts_hold_every_row_once_and_every_token_but_padding():
    lengths = [3, 60, 7, 12, 58, 4, 4, 33, 9, 61, 5, 6, 2, 40, 8, 3]
    batch = padded_batch(lengths)
    parts = length_parts(batch)
    assert len(parts) > 1
    seen = []
    for part in parts:
        widths = part["attention_mask"].sum(1).tolist()
        assert part["input_ids"].shape == part["attention_mask"].shape == part["labels"].shape
        assert part["attention_mask"].size(1) == max(widths)  # cut to its own longest row
        seen += widths
        for row in range(part["input_ids"].size(0)):
            # the row is one of the batch's, whole: its ids and labels as they were
            matches = [
                index
                for index in range(len(lengths))
                if lengths[index] == widths[row]
                and torch.equal(batch["input_ids"][index, : widths[row]], part["input_ids"][row, : widths[row]])
                and torch.equal(batch["labels"][index, : widths[row]], part["labels"][row, : widths[row]])
            ]
            assert matches
    assert sorted(seen) == sorted(lengths)
    padded = sum(part["attention_mask"].numel() for part in parts)
    assert padded < batch["attention_mask"].numel() * 0.6  # 16 x 61 positions before


@pytest.mark.parametrize(
    "lengths, left_padded",
    [([9] * 8, False), ([20, 19, 18, 20], False), ([3, 60, 7, 50], True), ([5], False)],
)
def test_batches_that_gain_nothing_or_are_left_padded_stay_whole(lengths, left_padded):
    batch = padded_batch(lengths)
    if left_padded:
        batch = {key: value.flip(1) for key, value in batch.items()}
    assert length_parts(batch) == [batch]


def test_a_tensor_of_another_shape_keeps_the_batch_whole():
    batch = padded_batch([3, 60, 7, 50, 4, 4, 5, 2])
    batch["labels"] = batch["labels"][:, :10]  # not one label per position
    assert length_parts(batch) == [batch]


def tiny_tagger():
    from transformers import BertForTokenClassification

    from tests.test_speed import _tiny_config  # no dropout: the step is compared value by value

    torch.manual_seed(0)
    return BertForTokenClassification(_tiny_config(num_labels=LABELS))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_trainer_takes_the_same_step_in_parts(tmp_path, precision):
    """plm's Trainer with ``plm_parts``: the loss it reports and the gradients equal the whole batch's."""
    from transformers import TrainingArguments

    from plmcli.checkpoints import trainer_class
    from plmcli.tasks.token_classification import word_weighted_loss

    batch = padded_batch([3, 60, 7, 12, 58, 4, 4, 33, 9, 61, 5, 6, 2, 40, 8, 3], seed=1)
    figures = {}
    for parts in (None, length_parts):
        model = tiny_tagger()
        args = TrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, report_to="none", bf16=precision == "bf16", disable_tqdm=True
        )
        trainer = trainer_class()(model=model, args=args, compute_loss_func=word_weighted_loss(model, 200.0))
        trainer.plm_parts = parts
        loss = trainer.training_step(model, dict(batch))
        figures[parts] = (float(loss), torch.cat([p.grad.flatten() for p in model.parameters()]))
    (whole_loss, whole), (parts_loss, split) = figures[None], figures[length_parts]
    tolerance = 1e-5 if precision == "fp32" else 2e-2  # bf16 rounds each part's matrix products its own way
    assert parts_loss == pytest.approx(whole_loss, rel=tolerance)
    assert torch.allclose(split, whole, rtol=tolerance, atol=tolerance * float(whole.abs().max()))

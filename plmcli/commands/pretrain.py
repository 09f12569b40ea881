"""`plm pretrain CORPUS...`: continue (or start) masked-language-model pretraining on your text.

Usage:
    plm pretrain corpus.txt
    plm pretrain notes/ "more/*.txt.gz" --epochs 1 --whole-word-mask
    plm pretrain corpus.txt --objective mlm+nsp --output runs/pretrain-nsp
    plm pretrain corpus.txt --from-scratch --size tiny --vocab-size 8000
    plm pretrain reviews-zh.txt --extend-vocab 3000 --whole-word-mask
"""

import shlex
import sys
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import PretrainConfig, defaults
from plmcli.options import (
    AllowChangedSettingsOption,
    AllowPickleOption,
    BaseModelOption,
    DeviceOption,
    MaxLengthOption,
    Objective,
    OverwriteOption,
    PrecisionOption,
    ReportToOption,
    ResumeOption,
    SaveStepsOption,
    SeedOption,
    Size,
    WarmupRatioOption,
    WeightDecayOption,
)

DEFAULT = defaults(PretrainConfig)


def pretrain(
    corpus: Annotated[
        list[str],
        typer.Argument(
            help="Text: files (.gz too), directories (their .txt files), globs, or - for stdin. "
            "Blank lines separate documents.",
            show_default=False,
            metavar="CORPUS",
        ),
    ],
    model: BaseModelOption = DEFAULT.model,
    output: Annotated[str, typer.Option("--output", "-o", help="Directory to write the model to.")] = DEFAULT.output,
    max_length: MaxLengthOption = DEFAULT.max_length,
    line_by_line: Annotated[
        bool, typer.Option("--line-by-line", help="One example per line instead of concatenated max-length blocks.")
    ] = DEFAULT.line_by_line,
    mlm_probability: Annotated[
        float, typer.Option(help="Share of tokens masked for the model to predict (between 0 and 1).")
    ] = DEFAULT.mlm_probability,
    whole_word_mask: Annotated[
        bool, typer.Option("--whole-word-mask", help="Mask all the pieces of a word together.")
    ] = DEFAULT.whole_word_mask,
    objective: Annotated[
        Objective,
        typer.Option(help="mlm, or mlm+nsp: BERT's recipe with next-sentence pairs (BertForPreTraining)."),
    ] = DEFAULT.objective,
    from_scratch: Annotated[
        bool,
        typer.Option("--from-scratch", help="Train a WordPiece tokenizer on the corpus and a new BERT of --size."),
    ] = DEFAULT.from_scratch,
    size: Annotated[
        Size, typer.Option(help="Size of a --from-scratch BERT (layers/hidden: 2/128, 4/256, 4/512, 12/768).")
    ] = DEFAULT.size,
    vocab_size: Annotated[
        int, typer.Option(min=100, help="WordPiece vocabulary size for --from-scratch.")
    ] = DEFAULT.vocab_size,
    extend_vocab: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Add the corpus's N most frequent characters that the base model's vocabulary reads as [UNK] "
            "(Chinese on an English model, say) as new tokens, then pretrain. 0: add none.",
        ),
    ] = DEFAULT.extend_vocab,
    validation_split: Annotated[
        float,
        typer.Option(help="Share of examples held out (between 0 and 1; at most 2,000) to measure perplexity."),
    ] = DEFAULT.validation_split,
    epochs: Annotated[float, typer.Option(min=0.0, help="Passes over the corpus.")] = DEFAULT.epochs,
    max_steps: Annotated[
        Optional[int], typer.Option(min=1, help="Stop after this many optimizer steps (overrides --epochs).")
    ] = DEFAULT.max_steps,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Examples per training step per device.")
    ] = DEFAULT.batch_size,
    lr: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            help="Peak learning rate (AdamW, linear decay). [default: 1e-4 for encoders narrower than 768, "
            "5e-5 up to 1024, else 2e-5; from scratch 5e-4, or 1e-4 from 768 wide]",
        ),
    ] = DEFAULT.lr,
    seed: SeedOption = DEFAULT.seed,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    resume: ResumeOption = DEFAULT.resume,
    allow_changed_settings: AllowChangedSettingsOption = DEFAULT.allow_changed_settings,
    save_steps: SaveStepsOption = DEFAULT.save_steps,
    warmup_ratio: WarmupRatioOption = DEFAULT.warmup_ratio,
    weight_decay: WeightDecayOption = DEFAULT.weight_decay,
    report_to: ReportToOption = DEFAULT.report_to,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
    preprocessing_workers: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Processes that tokenize the corpus files (each takes whole files). The result is cached "
            "on disk by content, so a second run over the same corpus skips tokenizing.",
        ),
    ] = DEFAULT.preprocessing_workers,
) -> None:
    """Continue masked-LM pretraining of a BERT on your text (or pretrain one from scratch)."""
    if from_scratch and model is not None:
        raise typer.BadParameter("--from-scratch trains a new model; leave out --model.", param_hint="--model")
    if not from_scratch and (size != DEFAULT.size or vocab_size != DEFAULT.vocab_size):
        raise typer.BadParameter(
            "--size and --vocab-size shape a new model; add --from-scratch.",
            param_hint="--size" if size != DEFAULT.size else "--vocab-size",
        )
    if from_scratch and extend_vocab:
        raise typer.BadParameter(
            "--from-scratch trains a new vocabulary on the corpus; --extend-vocab adds to a base model's. "
            "Use one of the two.",
            param_hint="--extend-vocab",
        )
    if objective == Objective.mlm_nsp and whole_word_mask:
        raise typer.BadParameter(
            "mlm+nsp masks single tokens; leave out --whole-word-mask.", param_hint="--whole-word-mask"
        )
    if objective == Objective.mlm_nsp and line_by_line:
        raise typer.BadParameter(
            "mlm+nsp builds sentence pairs; it has no --line-by-line mode.", param_hint="--line-by-line"
        )
    config = PretrainConfig(
        corpus=corpus,
        model=model,
        output=output,
        max_length=max_length,
        line_by_line=line_by_line,
        mlm_probability=mlm_probability,
        whole_word_mask=whole_word_mask,
        objective=objective.value,
        from_scratch=from_scratch,
        size=size.value,
        vocab_size=vocab_size,
        extend_vocab=extend_vocab,
        validation_split=validation_split,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
        resume=resume,
        allow_changed_settings=allow_changed_settings,
        save_steps=save_steps,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        report_to=report_to.value,
        command=["plm", *sys.argv[1:]],
        allow_pickle=allow_pickle,
        preprocessing_workers=preprocessing_workers,
    )
    from plmcli.run import pretrain as run_pretrain

    console.out(summary(run_pretrain(config)))


def summary(result) -> str:
    """The one-screen report of a finished run: before/after evidence, where the model is, what next."""
    metrics = result.metrics
    train, validation = metrics["train"], metrics["validation"]
    before, after = validation["before"], validation["after"]
    rows = [
        [name, f"{m['loss']:.4f}", f"{m['perplexity']:.2f}", f"{m['accuracy']:.4f}"]
        + ([f"{m['nsp_accuracy']:.4f}"] if "nsp_accuracy" in m else [])
        for name, m in (("before", before), ("after", after))
    ]
    headers = ["held-out", "loss", "perplexity", "masked accuracy"] + (
        ["NSP accuracy"] if "nsp_accuracy" in after else []
    )
    lines = [
        "",
        f"Trained {train['steps']} steps on {train['examples']} {metrics['examples']} "
        f"in {result.timing['runtime_seconds']:.1f} s "
        f"({result.timing['tokens_per_second']:.0f} tokens/s, {metrics['device']}, {metrics['precision']}).",
        f"Held-out: {validation['examples']} {metrics['examples']}, {after['masked_tokens']} masked tokens "
        "(the same masked inputs before and after):",
        "",
        console.format_table(headers, rows),
        "",
        f"Perplexity fell {metrics['perplexity_ratio']:.2f}x."
        if metrics["perplexity_ratio"] >= 1
        else f"Perplexity rose {1 / metrics['perplexity_ratio']:.2f}x: try a lower --lr or more data.",
        *result.notes,
        f"Model saved to {result.output}/ (metrics.json, manifest.json, README.md, loss_curve.png).",
        f'Try it:     plm fill-mask --model {shlex.quote(str(result.output))} "the movie was [MASK] ."',
        f"Fine-tune:  plm finetune labels.csv --model {shlex.quote(str(result.output))}",
    ]
    return "\n".join(lines)

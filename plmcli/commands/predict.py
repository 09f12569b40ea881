"""`plm predict [TEXT...]`: classify texts with a fine-tuned model.

Usage:
    plm predict "This is a great movie!"
    plm predict --file reviews.csv --format csv --output predictions.csv
    cat texts.txt | plm predict --file - --format json --top-k 3
    plm predict --file new.csv --output labels.csv --min-score 0.9 --review-file to-check.csv
    plm predict --file long_reviews.csv --long sliding
    plm predict --model runs/nli --file pairs.csv      # a pair model reads both of its columns
"""

from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import PredictConfig, defaults
from plmcli.options import (
    AllowPickleOption,
    DeviceOption,
    EncodingOption,
    LongOption,
    OutputFormat,
    OverwriteOption,
    PrecisionOption,
    TextColumnOption,
    TextPairColumnOption,
)

DEFAULT = defaults(PredictConfig)


def predict(
    texts: Annotated[
        Optional[list[str]], typer.Argument(help="Texts to classify.", show_default=False, metavar="[TEXT]...")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="A fine-tuned model directory (or Hugging Face id).")
    ] = DEFAULT.model,
    file: Annotated[
        Optional[str],
        typer.Option(
            "--file", "-f", help="Texts from a file: .txt (one per line), CSV/TSV/JSON/JSONL/Parquet, - for stdin."
        ),
    ] = DEFAULT.file,
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Write the results to this file (- for stdout)."),
    ] = DEFAULT.output,
    format: Annotated[
        Optional[OutputFormat],
        typer.Option(
            help="table, json, jsonl or csv. [default: table; with --output, from its extension]", case_sensitive=False
        ),
    ] = DEFAULT.format,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels per text, best first.")] = DEFAULT.top_k,
    all_scores: Annotated[
        bool, typer.Option("--all-scores", help="Add a prob_<label> column for every label.")
    ] = DEFAULT.all_scores,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = DEFAULT.batch_size,
    max_length: Annotated[
        Optional[int], typer.Option(min=8, help="Truncate texts to this many tokens. [default: the model's limit]")
    ] = DEFAULT.max_length,
    text_column: TextColumnOption = DEFAULT.text_column,
    text_pair_column: TextPairColumnOption = DEFAULT.text_pair_column,
    long: LongOption = DEFAULT.long,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    min_score: Annotated[
        Optional[float],
        typer.Option(
            min=0,
            max=1,
            help="Abstain below this top score: the row keeps its score, gets no label (single-label).",
        ),
    ] = DEFAULT.min_score,
    abstain_label: Annotated[
        Optional[str], typer.Option(help="The label rows below --min-score get instead of none, like 'review'.")
    ] = DEFAULT.abstain_label,
    review_file: Annotated[
        Optional[str],
        typer.Option(
            help="Also write the rows below --min-score, with every input column, here (.csv, .json, .jsonl)."
        ),
    ] = DEFAULT.review_file,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    encoding: EncodingOption = DEFAULT.encoding,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
) -> None:
    """Classify texts with a fine-tuned model (default: runs/finetune)."""
    config = PredictConfig(
        texts=texts or [],
        file=file,
        model=model,
        output=output,
        format=format.value if format else None,
        top_k=top_k,
        all_scores=all_scores,
        batch_size=batch_size,
        max_length=max_length,
        text_column=text_column,
        text_pair_column=text_pair_column,
        long=long.value,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
        min_score=min_score,
        abstain_label=abstain_label,
        review_file=review_file,
        encoding=encoding,
        allow_pickle=allow_pickle,
    )
    from plmcli.formats import render
    from plmcli.prediction import predict as run_predict

    result = run_predict(config, write=console.write)  # CSV and JSON to stdout as they come
    if result.output is not None:
        console.info(f"Wrote {result.count} predictions to {result.output} ({result.texts_per_second:.0f} texts/s).")
    elif result.rows:
        console.out(render(result.rows, result.columns, result.shown_columns, result.format).rstrip("\n"))

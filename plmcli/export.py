"""`plm export`: a fine-tuned model as ONNX (fp32, or int8) that is checked on real rows before it is written.

The graph comes from ``torch.onnx.export`` (the dynamo exporter: dynamic batch and sequence axes,
``attention_mask`` always an input, ``token_type_ids`` where the model reads them) and runs in
onnxruntime. The check is part of the export: torch fp32, as ``plm predict`` runs it, and the
export score the check rows (``--check FILE``, else the validation file the model was trained
with) at batch 1 and at serve's batch size, each batch padded to its longest text; the report is
label agreement, the largest score difference and, with labels, the metric of both. fp32 must
match within PARITY; int8 must agree on MIN_AGREEMENT of the labels and lose at most MAX_LOSS
points of the metric, or the export is refused (``--force`` keeps it, and the card says so).

int8 is onnxruntime's dynamic quantization, per-channel int8 weights, of the weight matrix
products (the embeddings stay fp32: a lookup gains nothing from int8). When quantizing everything
fails the check, each part (an encoder layer, the pooler, the head) is quantized alone to measure
what it costs, and the costliest parts are kept in fp32, one more at a time, until a variant
passes: the first that passes keeps the fewest fp32 weights, so it is the fastest, chosen without
a timing. Everything is written into a staging directory that takes the output's name only when
the check passed. The model's own predict path is unchanged: plmcli.onnx_model runs the result.
"""

import contextlib
import importlib.util
import io
import logging
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from plmcli import console, modeling, reporting
from plmcli.config import ExportConfig
from plmcli.errors import RUNTIME_FAILURE, PlmError
from plmcli.export_check import MAX_LOSS, MIN_AGREEMENT, SERVE_BATCH, Judge, check_rows_of, judge_for
from plmcli.onnx_model import EXPORT_KEY, GRAPH, MASKED_LM, SEQUENCE, TOKENS
from plmcli.outputs import check_output_dir, check_places, claimed, staged_dir
from plmcli.settings import ModelSettings

PARITY = 1e-4  # the largest score difference an fp32 export may have from torch fp32
SPEED_BATCHES = (1, 32)  # the speed table's batch sizes
SPEED_TEXTS = {1: 64, 32: 256}  # texts timed at each batch size (at most the check rows)
SENSITIVITY_TEXTS = 256  # check rows on which each part's quantization is measured
OPSET = 18


@dataclass
class ExportResult:
    """What `plm export` wrote and measured."""

    output: Path
    task: str  # ModelSettings.task, or "masked-lm"
    quantize: str  # none or int8
    variant: str  # what the exported graph is, in words
    rows: int  # check rows
    source: str  # where they came from
    metric_name: Optional[str]
    torch_metric: Optional[float]
    checks: dict  # {"fp32": [Measured, ...], "int8": [...]}
    speed: list[dict]  # {"model", "batch_size", "texts_per_second", "latency_ms"}
    forced: bool = False
    kept_fp32: list[str] = field(default_factory=list)  # the parts an int8 export keeps in fp32
    sensitivity: dict = field(default_factory=dict)  # each part quantized alone: its label agreement


def export(config: ExportConfig) -> ExportResult:
    """Export the model of ``config``, check it on real rows, and write the directory (or refuse, writing nothing)."""
    missing = [name for name in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise PlmError(
            f"plm export needs onnxruntime, onnx and onnxscript ({missing[0]} is missing): pip install 'plm[onnx]'."
        )
    check_places(config.places())
    output = check_output_dir(config.output, config.overwrite)
    kind = _kind(config.model)
    settings = ModelSettings.of(modeling.read_config(config.model)) if kind != MASKED_LM else None
    rows = check_rows_of(config, kind, settings)
    judge = judge_for(kind, config, settings)
    judge.read(rows)  # labels the model does not know, a tagger's words: refused before any export
    source_model, tokenizer = _load_for_export(config, kind)
    inputs = _inputs(source_model, kind)
    limit = modeling.model_limit(tokenizer, source_model)
    console.info(
        f"Checking on {len(rows.texts if rows.words is None else rows.words)} rows of {rows.source} ({rows.how})."
    )
    reference = judge.run(judge.torch_model(), SERVE_BATCH)
    torch_metric = judge.metric(reference)
    with claimed(output) as claim, staged_dir(claim) as staging, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        fp32 = work / "fp32.onnx"
        _export_graph(source_model, inputs, kind, fp32)
        del source_model
        checks = {"fp32": judge.check(fp32, reference)}
        worst = max(item.max_difference for item in checks["fp32"])
        if not worst <= PARITY:
            raise PlmError(
                f"the ONNX graph's scores differ from torch fp32's by up to {worst:.3g} (more than {PARITY:g}) on "
                f"{rows.source}; this is a bug in the export of this architecture, nothing was written.",
                RUNTIME_FAILURE,
            )
        chosen, variant, kept, sensitivity, forced = fp32, "fp32", [], {}, False
        if config.quantize == "int8":
            chosen, kept, sensitivity, measured = _int8(fp32, work, judge, reference, torch_metric)
            checks["int8"] = measured
            failure = judge.failure(measured, torch_metric)
            variant = "int8 (dynamic, per-channel weights" + (
                f"; kept in fp32: {', '.join(kept)})" if kept else "; every layer)"
            )
            if failure and not config.force:
                raise PlmError(
                    f"the int8 export {failure} on {len(judge)} rows of {rows.source} (at most "
                    f"{100 - MIN_AGREEMENT * 100:g}% of labels may change, and {MAX_LOSS:g} points of the metric); "
                    "nothing was written. Export fp32 (--quantize none), or pass --force to keep it anyway.",
                )
            forced = bool(failure)
        speed = _speed(judge, {"ONNX fp32": fp32, **({"ONNX int8": chosen} if config.quantize == "int8" else {})})
        result = ExportResult(
            output=output,
            task=settings.task if settings else MASKED_LM,
            quantize=config.quantize,
            variant=variant,
            rows=len(judge),
            source=f"{rows.source} ({rows.how})",
            metric_name=judge.metric_name if rows.labels is not None else None,
            torch_metric=torch_metric,
            checks=checks,
            speed=speed,
            forced=forced,
            kept_fp32=kept,
            sensitivity=sensitivity,
        )
        _write(staging, config, kind, chosen, tokenizer, inputs, limit, result, rows)
    return result


# ---- what is exported -----------------------------------------------------------------------------------------------


def _kind(model: str) -> str:
    """The head of a local model directory plm can export: SEQUENCE, TOKENS or MASKED_LM; else one line."""
    from plmcli.onnx_model import export_section

    if export_section(model) is not None:
        raise PlmError(f"{model} is already an ONNX export; export the torch model directory it came from.")
    source = modeling.resolve(model)
    if not source.local:
        raise PlmError(f"plm export reads a local model directory; {model} is not one.")
    architectures = modeling.read_config(model).get("architectures") or []
    for suffix, kind in (
        ("ForSequenceClassification", SEQUENCE),
        ("ForTokenClassification", TOKENS),
        ("ForMaskedLM", MASKED_LM),
        ("ForPreTraining", MASKED_LM),
    ):
        if any(name.endswith(suffix) for name in architectures):
            return kind
    found = ", ".join(architectures) or "no architecture in config.json"
    raise PlmError(
        f"{model} is not a model plm trains ({found}); export a fine-tuned classifier, regressor or tagger "
        "(plm finetune) or a pretrained masked-LM (plm pretrain)."
    )


def _load_for_export(config: ExportConfig, kind: str):
    """(the transformers model with its stock forward, its tokenizer): what the graph is traced from."""
    if kind == MASKED_LM:
        tokenizer, model = modeling.load_masked_lm(config.model, config.allow_pickle)
    else:
        tokenizer, model = modeling.load_classifier(config.model, config.allow_pickle, tokens=kind == TOKENS)
    model.float().eval()
    return model, tokenizer


def _inputs(model, kind: str) -> list[str]:
    """The graph's inputs: input_ids and attention_mask, and token_type_ids where the model reads them."""
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if modeling.reads_segment_ids(model) else [])


def _export_graph(model, inputs: list[str], kind: str, path: Path) -> None:
    """The model's logits as an ONNX graph with dynamic batch and sequence axes; its chatter is kept off the screen."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                given["token_type_ids"] = token_type_ids
            return self.model(**given).logits

    example = torch.tensor([[2, 7, 8, 9, 3, 0, 0], [2, 9, 8, 7, 6, 5, 3]])  # (batch 2, length 7): neither axis is 1
    example = example.clamp(max=model.config.vocab_size - 1)
    arguments = (example, (example != 0).long()) + ((torch.zeros_like(example),) if len(inputs) == 3 else ())
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    chatter = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
            _quiet_logs(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Logits(model),
                arguments,
                str(path),
                input_names=inputs,
                output_names=["logits"],
                dynamic_shapes={name: {0: batch, 1: length} for name in inputs},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter's own errors: an architecture it cannot trace
        reason = " ".join(str(exc).split())[:200]
        raise PlmError(f"torch.onnx could not export {type(model).__name__}: {reason}", RUNTIME_FAILURE) from exc


@contextlib.contextmanager
def _quiet_logs():
    """Keep the loggers of torch.onnx and onnxruntime's quantization (info and warnings) off stderr."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# ---- int8 -----------------------------------------------------------------------------------------------------------


def _parts(path: Path) -> dict[str, list[str]]:
    """The graph's weight products (MatMul and Gemm nodes with a stored weight) by the part of the model they are in.

    Parts are named by the torch module that made them (the exporter records it in each node):
    ``layer N`` for an encoder layer, ``pooler``, ``embeddings``, and ``head`` for the rest.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    stored = {item.name for item in graph.initializer}
    parts: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not any(name in stored for name in node.input[1:2]):
            continue
        scopes = next((item.value for item in node.metadata_props if item.key == "pkg.torch.onnx.name_scopes"), "")
        layer = re.search(r"\.layers?\.(\d+)\b", scopes)
        if layer:
            part = f"layer {layer.group(1)}"
        elif "pooler" in scopes:
            part = "pooler"
        elif "embeddings" in scopes:
            part = "embeddings"
        else:
            part = "head"
        parts.setdefault(part, []).append(node.name)
    return dict(sorted(parts.items(), key=lambda item: _part_order(item[0])))


def _part_order(part: str) -> tuple:
    if part.startswith("layer "):
        return (1, int(part.split()[1]))
    return ({"embeddings": 0, "pooler": 2, "head": 3}.get(part, 4), 0)


def _quantize(source: Path, target: Path, exclude: list[str]) -> Path:
    """onnxruntime's dynamic int8 quantization of the weight products, per-channel, but the ``exclude`` nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings(), _quiet_logs():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=exclude,
        )
    return target


def _int8(fp32: Path, work: Path, judge: Judge, reference, torch_metric) -> tuple[Path, list[str], dict, list]:
    """The int8 variant to keep: (its graph, the parts kept in fp32, each part's measured cost, its check).

    Every part quantized first; if that fails the check, each part alone is quantized and measured
    on SENSITIVITY_TEXTS rows, and the costliest are kept in fp32 one more at a time (at most half
    of them): the first variant that passes is kept; if none does, the best one tried, for the
    refusal (or --force) to act on.
    """
    parts = _parts(fp32)
    whole = _quantize(fp32, work / "int8.onnx", [])
    measured = judge.check(whole, reference)
    if not judge.failure(measured, torch_metric) or len(parts) < 2:
        return whole, [], {}, measured
    console.info("int8 of every layer fails the check; measuring what quantizing each part costs.")
    sample = min(len(judge), SENSITIVITY_TEXTS)
    short_reference = judge.run(judge.onnx_model(fp32), SERVE_BATCH, sample)
    sensitivity = {}
    for number, (part, nodes) in enumerate(parts.items()):
        others = [node for name, group in parts.items() if name != part for node in group]
        alone = _quantize(fp32, work / f"part-{number}.onnx", others)
        agreement, difference = judge.compare(short_reference, judge.run(judge.onnx_model(alone), SERVE_BATCH, sample))
        sensitivity[part] = {"agreement": round(agreement, 6), "max_score_difference": float(f"{difference:.3g}")}
        alone.unlink()
    ranked = sorted(
        parts, key=lambda part: (sensitivity[part]["agreement"], -sensitivity[part]["max_score_difference"])
    )
    best = (whole, [], measured)
    for count in range(1, len(parts) // 2 + 1):
        kept = ranked[:count]
        variant = _quantize(fp32, work / f"int8-{count}.onnx", [node for part in kept for node in parts[part]])
        tried = judge.check(variant, reference)
        if not judge.failure(tried, torch_metric):
            return variant, sorted(kept, key=_part_order), sensitivity, tried
        if min(item.agreement for item in tried) > min(item.agreement for item in best[2]):
            best = (variant, sorted(kept, key=_part_order), tried)
    return best[0], best[1], sensitivity, best[2]


# ---- speed ----------------------------------------------------------------------------------------------------------


def _speed(judge: Judge, graphs: dict[str, Path]) -> list[dict]:
    """Texts per second and latency of torch fp32 and each graph at SPEED_BATCHES, on the first check rows."""
    models = {"torch fp32": judge.torch_model(), **{name: judge.onnx_model(path) for name, path in graphs.items()}}
    table = []
    for name, model in models.items():
        for batch_size in SPEED_BATCHES:
            count = min(len(judge), SPEED_TEXTS[batch_size])
            judge.run(model, batch_size, min(count, batch_size))  # warm-up: the first pass allocates
            started = time.perf_counter()
            judge.run(model, batch_size, count)
            rate = count / max(time.perf_counter() - started, 1e-9)
            table.append(
                {
                    "model": name,
                    "batch_size": batch_size,
                    "texts_per_second": round(rate, 1),
                    "latency_ms": round(1000 * min(batch_size, count) / rate, 2),
                }
            )
    return table


def speed_rows(speed: list[dict]) -> list[list]:
    """The speed table's rows: model, texts/s and latency at each batch size, and the ratio to torch fp32."""
    base = {item["batch_size"]: item["texts_per_second"] for item in speed if item["model"] == "torch fp32"}
    return [
        [
            item["model"],
            item["batch_size"],
            f"{item['texts_per_second']:.0f}",
            f"{item['latency_ms']:.1f}",
            f"{item['texts_per_second'] / base[item['batch_size']]:.2f}x" if base.get(item["batch_size"]) else "",
        ]
        for item in speed
    ]


SPEED_HEADERS = ["model", "batch", "texts/s", "ms/batch", "vs torch"]
CHECK_HEADERS = ["export", "batch", "agreement", "max score diff", "metric"]


def check_rows(result: ExportResult) -> list[list]:
    """The check table's rows: each export and batch size, its agreement, score difference and metric."""
    rows = []
    for name, measured in result.checks.items():
        for item in measured:
            metric = "" if item.metric is None else f"{item.metric:.2f}"
            rows.append([name, item.batch_size, f"{item.agreement:.2%}", f"{item.max_difference:.2e}", metric])
    return rows


# ---- writing --------------------------------------------------------------------------------------------------------


def _write(
    staging: Path, config: ExportConfig, kind: str, graph: Path, tokenizer, inputs, limit, result, rows
) -> None:
    """model.onnx, the tokenizer, config.json with plm's settings and the export's, export.json, the card, manifest."""
    shutil.copyfile(graph, staging / GRAPH)
    tokenizer.save_pretrained(staging)
    written = {item.name for item in staging.iterdir()} - {GRAPH}
    raw = modeling.read_config(config.model)
    embeddings = _vocabulary(staging / GRAPH)
    raw[EXPORT_KEY] = {
        "format": "onnx",
        "head": kind,
        "quantize": config.quantize,
        "variant": result.variant,
        "kept_fp32": result.kept_fp32,
        "forced": result.forced,
        "inputs": inputs,
        "opset": OPSET,
        "max_length": limit,
        "vocab_size": embeddings,
        "exported_from": config.model,
        "tokenizer_files": {name: reporting.file_digest(staging / name) for name in sorted(written)},
    }
    reporting.write_json(staging / "config.json", raw)
    report = {
        "model": config.model,
        "task": result.task,
        "quantize": result.quantize,
        "variant": result.variant,
        "forced": result.forced,
        "check": {
            "rows": result.rows,
            "source": result.source,
            "labelled": rows.labels is not None,
            "metric": result.metric_name,
            "torch_fp32_metric": None if result.torch_metric is None else round(result.torch_metric, 4),
            "min_agreement": MIN_AGREEMENT,
            "max_metric_loss": MAX_LOSS,
            "fp32_parity": PARITY,
            **{name: [item.to_dict() for item in measured] for name, measured in result.checks.items()},
        },
        "kept_fp32": result.kept_fp32,
        "sensitivity": result.sensitivity,
        "speed": result.speed,
    }
    reporting.write_json(staging / "export.json", report)
    (staging / "README.md").write_text(_card(config, result, inputs), encoding="utf-8")
    reporting.write_manifest(staging / "manifest.json", config, {"variant": result.variant}, _inputs_read(config))


def _vocabulary(path: Path) -> Optional[int]:
    """The rows of the graph's word embedding table (the largest table the ids index)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for item in graph.initializer:
        if item.name.endswith("word_embeddings.weight") and len(item.dims) == 2:
            return int(item.dims[0])
    return None


def _inputs_read(config: ExportConfig) -> list[str]:
    model = Path(config.model)
    return [str(path) for path in sorted(model.iterdir()) if path.is_file()] + ([config.check] if config.check else [])


def _card(config: ExportConfig, result: ExportResult, inputs: list[str]) -> str:
    """The exported directory's model card: what it is, how it was checked, how fast it runs, how to use it."""
    lines = [
        f"# {Path(config.output).name}: ONNX export of {config.model}",
        "",
        f"- Task: {result.task}; graph: {result.variant}, opset {OPSET}, dynamic batch and sequence axes.",
        "- Beside it: the tokenizer, and config.json with plm's settings (labels, calibration, thresholds, target "
        "scale), so this directory is all a deployment needs.",
    ]
    if result.forced:
        lines += [
            "",
            "**Kept with --force although it failed the check** (see below): its labels differ from the torch "
            "model's more than plm allows.",
        ]
    lines += [
        "",
        "## The check",
        "",
        f"Torch fp32 (as `plm predict` runs it) against the export on {result.rows} rows of {result.source}, "
        f"at batch 1 and batch {SERVE_BATCH} (each batch padded to its longest text)."
        + (
            f" Torch fp32's {result.metric_name}: {result.torch_metric:.2f}."
            if result.torch_metric is not None
            else ""
        ),
        "",
        _markdown(CHECK_HEADERS, check_rows(result)),
        "",
        f"An fp32 export must match within {PARITY:g}; an int8 one must agree on at least {MIN_AGREEMENT:.0%} of "
        f"labels and lose at most {MAX_LOSS:g} points of the metric.",
    ]
    if result.kept_fp32:
        lines += ["", f"Kept in fp32, as measured to cost agreement when quantized: {', '.join(result.kept_fp32)}."]
    if result.sensitivity:
        shown = [
            [part, f"{item['agreement']:.2%}", item["max_score_difference"]]
            for part, item in result.sensitivity.items()
        ]
        lines += ["", "Each part quantized alone:", "", _markdown(["part", "agreement", "max score diff"], shown)]
    lines += [
        "",
        "## Speed (this machine's CPU, at export)",
        "",
        _markdown(SPEED_HEADERS, speed_rows(result.speed)),
        "",
        "## Use",
        "",
        "```",
        f'plm predict --model {config.output} "a text"',
        f"plm serve --model {config.output}",
        "```",
        "",
        "Or onnxruntime alone: the graph takes int64 `input_ids` and `attention_mask`"
        + (" (and `token_type_ids`)" if "token_type_ids" in inputs else "")
        + " of shape (batch, sequence) from the tokenizer here, and gives `logits`.",
        "",
    ]
    return "\n".join(lines)


def _markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary(result: ExportResult) -> str:
    """export's one-screen report: what was written, the check, the speed table."""
    metric = (
        f"; torch fp32's {result.metric_name}: {result.torch_metric:.2f}" if result.torch_metric is not None else ""
    )
    lines = [
        f"Exported {result.task} model to {result.output}/ ({GRAPH}: {result.variant}).",
        f"Check on {result.rows} rows of {result.source}{metric}:",
        console.format_table(CHECK_HEADERS, check_rows(result)),
    ]
    if result.forced:
        lines.append("Kept with --force although int8 failed the check; the card says so.")
    lines += ["", "Speed on this CPU:", console.format_table(SPEED_HEADERS, speed_rows(result.speed))]
    lines += ["", f'Run it: plm predict --model {result.output} "a text"']
    return "\n".join(lines)

"""`make bench`: every benchmark, plm against plain Hugging Face, into bench/results.json and README's table.

Runs, in order: fine-tuning (which also writes the model the others use), prediction, cold start
and masked-LM pretraining, each alternating plm and its plain counterparts in fresh processes.
The machine is described in the results; the table in README.md between the bench markers is
rewritten from them.

Usage:
    python bench/run.py [--repeats 3] [--finetune-samples 1280] [--pretrain-steps 10]
    python bench/run.py --table-only     (rewrite README's table from bench/results.json)
    python bench/run.py --only finetune  (measure one part again, keep the others)
"""

import argparse
import json
import time
from pathlib import Path

import cold_start
import finetune_vs_hf
import predict_vs_pipeline
import pretrain_vs_hf
from isolated import describe, machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE.parent / "README.md"
START, END = "<!-- bench:start (written by make bench) -->", "<!-- bench:end -->"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def table(results: dict) -> str:
    """README's results table (markdown) with its caption."""
    finetune, pretrain = results["finetune"], results["pretrain"]
    predict, cold = results["predict"], results["cold_start"]
    plm_ft = finetune["plm"]

    def ft(side):
        accuracy = f"dev accuracy {side['dev_accuracy']:.4f}"
        whole = f"whole process {side['process_seconds']} s"
        return f"{side['samples_per_second']} samples/s, {accuracy}, {whole}, {side['peak_rss_mb']} MB"

    def pr(side):
        return (
            f"{side['process_seconds']} s whole ({side['process_texts_per_second']} texts/s), "
            f"{side['prediction_texts_per_second']} texts/s predicting, {side['peak_rss_mb']} MB"
        )

    def pr_ratio(name):
        ratios = predict["ratios"]
        return f"{_x(ratios['process'][name])} whole, {_x(ratios['prediction'][name])} predicting"

    plm_pt, hf_pt = pretrain["plm"], pretrain["hf"]
    rows = [
        ("job", "plm", "plain Hugging Face", "plm / plain", "bar"),
        (
            f"finetune, {finetune['samples']} SST-2 rows, batch 32, {finetune['precision']}",
            ft(plm_ft),
            "length-grouped batches: " + ft(finetune["hf_grouped"]),
            _x(finetune["ratios"]["hf_grouped"]),
            ">= 1.3x",
        ),
        ("", "", "dynamic padding: " + ft(finetune["hf_dynamic"]), _x(finetune["ratios"]["hf_dynamic"]), ""),
        (
            "",
            "",
            "padding to 128 (run_glue's default): " + ft(finetune["hf_max_length"]),
            _x(finetune["ratios"]["hf_max_length"]),
            "",
        ),
        (
            f"pretrain (masked LM), {pretrain['steps']} steps of {pretrain['batch']}, {pretrain['precision']}",
            f"{plm_pt['tokens_per_second']} tokens/s, held-out perplexity {plm_pt['perplexity_after']}, "
            f"{plm_pt['peak_rss_mb']} MB",
            f"run_mlm.py's recipe: {hf_pt['tokens_per_second']} tokens/s, perplexity {hf_pt['perplexity_after']}, "
            f"{hf_pt['peak_rss_mb']} MB",
            f"{_x(pretrain['ratios']['tokens_per_second'])} speed, {_x(pretrain['ratios']['peak_rss'])} memory",
            ">= 3x speed, < 0.5x memory",
        ),
        (
            f"predict the {predict['texts']} dev sentences to a CSV, {predict['precision']}",
            pr(predict["plm"]),
            "`pipeline()`, default batch size: " + pr(predict["pipeline_default"]),
            pr_ratio("pipeline_default"),
            ">= 4.5x",
        ),
        ("", "", "`pipeline(batch_size=32)`: " + pr(predict["pipeline_32"]), pr_ratio("pipeline_32"), ""),
        (
            "",
            f"labels as the fp32 loop's: {predict['plm']['labels_as_fp32_loop']:.2%}",
            "hand-written fp32 loop sorted by length, batch 64: " + pr(predict["sorted_loop"]),
            pr_ratio("sorted_loop"),
            ">= 1.6x",
        ),
        ("`plm --help`, whole process", f"{cold['plm_help']['seconds']} s", "", "", "<= 0.3 s"),
        (
            "one-text predict, whole process",
            f"{cold['plm_predict_one']['seconds']} s, {cold['plm_predict_one']['peak_rss_mb']} MB",
            f"plain script (load, classify, print): {cold['plain_hf_one']['seconds']} s, "
            f"{cold['plain_hf_one']['peak_rss_mb']} MB",
            f"{_x(cold['predict_time_ratio'])} the time",
            "<= 0.8x the time",
        ),
    ]
    lines = [f"| {' | '.join(rows[0])} |", "|" + "---|" * len(rows[0])]
    lines += [f"| {' | '.join(cells)} |" for cells in rows[1:]]
    caption = (
        f"Measured by `make bench` on {results['date']}: {describe(results['machine'])}. Medians of "
        f"{finetune['runs']['plm']} alternating runs (the padded plain fine-tunes: "
        f"{finetune['runs']['hf_max_length']} run); memory is each process's peak resident set."
    )
    return caption + "\n\n" + "\n".join(lines)


def write_table(results: dict) -> None:
    text = README.read_text(encoding="utf-8")
    before, start, rest = text.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md has no {START} ... {END} markers for the table.")
    README.write_text(before + START + "\n" + table(results) + "\n" + END + after, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--finetune-samples", type=int, default=1280)
    parser.add_argument("--pretrain-steps", type=int, default=10)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--only",
        choices=["finetune", "predict", "cold_start", "pretrain"],
        help="measure this part again, keeping the others in bench/results.json",
    )
    args = parser.parse_args()
    if args.table_only:
        return write_table(json.loads(RESULTS.read_text(encoding="utf-8")))
    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    if args.only:
        results = {**json.loads(RESULTS.read_text(encoding="utf-8")), **results}
    started = time.perf_counter()
    for name, run in (
        ("finetune", lambda: finetune_vs_hf.measure(args.finetune_samples, args.repeats)),
        ("predict", lambda: predict_vs_pipeline.measure(repeats=args.repeats)),
        ("cold_start", lambda: cold_start.measure(repeats=max(args.repeats, 3))),
        ("pretrain", lambda: pretrain_vs_hf.measure(steps=args.pretrain_steps, repeats=args.repeats)),
    ):
        if args.only and name != args.only:
            continue
        print(f"{name}:", flush=True)
        results[name] = run()
        print(json.dumps(results[name], indent=2), flush=True)
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_table(results)
    print(f"Wrote {RESULTS} and the table in {README}.")


if __name__ == "__main__":
    main()

"""`plm pretrain` end to end on the tiny BERT, its evidence and outputs, the handoff to finetune, and bad input."""

import json

import pytest

from plmcli import modeling
from tests.conftest import corpus_text, sentiment_rows, snapshot, write_csv

QUICK = ["--max-length", "32", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu"]


def test_pretrain_writes_a_standard_masked_lm_with_before_and_after_evidence(tiny_pretrained):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_pretrained)
    assert type(model) is BertForMaskedLM
    assert json.loads((tiny_pretrained / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert AutoTokenizer.from_pretrained(tiny_pretrained).mask_token == "[MASK]"
    metrics = json.loads((tiny_pretrained / "metrics.json").read_text())
    before, after = metrics["validation"]["before"], metrics["validation"]["after"]
    assert set(before) == set(after) == {"loss", "perplexity", "accuracy", "masked_tokens"}
    assert before["masked_tokens"] == after["masked_tokens"] > 0  # the same masked inputs
    assert after["perplexity"] < before["perplexity"]
    assert metrics["perplexity_ratio"] == pytest.approx(before["perplexity"] / after["perplexity"], rel=1e-3)
    assert metrics["train"]["steps"] > 0 and metrics["train"]["tokens_seen"] > 0
    assert metrics["objective"] == "mlm" and metrics["examples"] == "blocks"
    assert metrics["precision"] == modeling.training_precision("auto", "cpu")[0]  # fp32, or bf16 where the CPU has it
    assert metrics["lineage"][0].endswith("tiny-bert0") or "tiny-bert" in metrics["lineage"][0]
    card = (tiny_pretrained / "README.md").read_text()
    assert "masked-LM loss" in card and "corpus.txt" in card and "tiny-bert" in card
    assert (tiny_pretrained / "loss_curve.png").stat().st_size > 1000


def test_cli_summary_and_outputs(cli, tiny_base, corpus_txt, tmp_path):
    output = tmp_path / "pretrained"
    run = cli("pretrain", corpus_txt, "--model", tiny_base, "--output", output, "--epochs", "1", *QUICK)
    assert run.exit_code == 0, run.stderr
    assert "has no trained masked-LM head; starting it fresh." in run.stderr
    assert "Perplexity fell" in run.stdout or "Perplexity rose" in run.stdout
    assert "before" in run.stdout and "after" in run.stdout
    assert f'plm fill-mask --model {output} "the movie was [MASK] ."' in run.stdout
    assert "Some weights" not in run.stderr and "MISSING" not in run.stderr  # no transformers load report
    assert {"model.safetensors", "config.json", "metrics.json", "README.md", "loss_curve.png"} <= {
        p.name for p in output.iterdir()
    }


def test_same_seed_same_metrics(tiny_base, corpus_txt, tmp_path):
    from plmcli.config import PretrainConfig
    from plmcli.run import pretrain

    results = [
        pretrain(
            PretrainConfig(
                corpus=[str(corpus_txt)],
                model=str(tiny_base),
                output=str(tmp_path / f"run{i}"),
                max_length=32,
                max_steps=4,
                batch_size=8,
                lr=3e-3,
                device="cpu",
            )
        ).metrics
        for i in range(2)
    ]
    assert results[0]["validation"] == results[1]["validation"]
    assert results[0]["train"]["loss"] == results[1]["train"]["loss"]


def test_line_by_line_and_whole_word_mask(cli, tiny_base, corpus_txt, tmp_path):
    output = tmp_path / "lines"
    run = cli(
        "pretrain",
        corpus_txt,
        "--model",
        tiny_base,
        "--output",
        output,
        "--max-steps",
        "3",
        "--line-by-line",
        "--whole-word-mask",
        *QUICK,
    )
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["examples"] == "lines" and metrics["whole_word_mask"] is True and metrics["train"]["steps"] == 3


@pytest.mark.slow  # pretrain then finetune; mlm+nsp's pairs are checked without training elsewhere
def test_mlm_nsp_trains_bert_for_pretraining_that_finetunes(cli, tiny_base, tmp_path):
    from transformers import AutoModelForPreTraining, BertForPreTraining

    corpus = tmp_path / "docs.txt"
    corpus.write_text(corpus_text(60))
    output = tmp_path / "nsp"
    run = cli(
        "pretrain", corpus, "--model", tiny_base, "--output", output, "--objective", "mlm+nsp", "--epochs", "2", *QUICK
    )
    assert run.exit_code == 0, run.stderr
    assert "NSP accuracy" in run.stdout
    assert type(AutoModelForPreTraining.from_pretrained(output)) is BertForPreTraining
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0 <= metrics["validation"]["after"]["nsp_accuracy"] <= 1 and metrics["examples"] == "pairs"
    filled = cli("fill-mask", "--model", output, "--top-k", "2", "a [MASK] movie")
    assert filled.exit_code == 0, filled.stderr
    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(60))
    tuned = cli(
        "finetune", data, "--model", output, "--output", tmp_path / "tuned", "--epochs", "1", "--device", "cpu"
    )
    assert tuned.exit_code == 0, tuned.stderr


def test_from_scratch_trains_a_tokenizer_and_a_tiny_bert_that_finetunes(cli, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(60))
    output = tmp_path / "scratch"
    run = cli(
        "pretrain",
        corpus,
        "--from-scratch",
        "--size",
        "tiny",
        "--vocab-size",
        "120",
        "--output",
        output,
        "--epochs",
        "1",
        *QUICK,
    )
    assert run.exit_code == 0, run.stderr
    config = AutoConfig.from_pretrained(output)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 128, 2)
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert config.vocab_size == len(tokenizer) <= 120
    assert tokenizer.tokenize("the movie was good") == ["the", "movie", "was", "good"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["from_scratch"] is True and "from scratch" in metrics["base_model"]
    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(60))
    tuned = cli(
        "finetune", data, "--model", output, "--output", tmp_path / "tuned", "--epochs", "1", "--device", "cpu"
    )
    assert tuned.exit_code == 0, tuned.stderr


def test_finetune_from_a_pretrain_output_says_what_is_new_and_records_the_lineage(cli, tiny_pretrained, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(60))
    output = tmp_path / "tuned"
    run = cli("finetune", data, "--model", tiny_pretrained, "--output", output, "--epochs", "1", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    assert f"{tiny_pretrained} has no trained pooler; starting it fresh." in run.stderr
    assert "Some weights" not in run.stderr and "newly initialized" not in run.stderr
    lineage = json.loads((output / "metrics.json").read_text())["lineage"]
    assert len(lineage) == 3 and "pretrain (mlm)" in lineage[1] and lineage[2].startswith("finetune on")
    assert " -> ".join(lineage) in (output / "README.md").read_text()


def test_cli_passes_its_options_to_the_engine(cli, monkeypatch):
    import plmcli.run

    seen = {}

    def fake_pretrain(config):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(plmcli.run, "pretrain", fake_pretrain)
    run = cli(
        "pretrain",
        "a.txt",
        "b/",
        "--objective",
        "mlm+nsp",
        "--mlm-probability",
        "0.2",
        "--max-steps",
        "7",
        "--validation-split",
        "0.1",
        "--seed",
        "3",
    )
    assert run.exit_code == 0
    config = seen["config"]
    assert config.corpus == ["a.txt", "b/"] and config.objective == "mlm+nsp" and config.mlm_probability == 0.2
    assert (config.max_steps, config.validation_split, config.seed, config.output) == (7, 0.1, 3, "runs/pretrain")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["missing.txt"], "Error: corpus file not found: missing.txt"),
        (["corpus.txt", "--from-scratch", "--model", "x"], "--from-scratch trains a new model; leave out --model."),
        (["corpus.txt", "--objective", "mlm+nsp", "--line-by-line"], "it has no --line-by-line mode"),
        (["corpus.txt", "--size", "tiny"], "--size and --vocab-size shape a new model; add --from-scratch."),
        (["corpus.txt", "--objective", "mlm+nsp", "--whole-word-mask"], "leave out --whole-word-mask"),
        (["corpus.txt", "--mlm-probability", "1"], "Error: --mlm-probability must be between 0 and 1; got 1.0."),
        (["empty.txt"], "Error: the corpus has no text: empty.txt is empty."),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(corpus_text(5))
    (tmp_path / "empty.txt").write_text("\n\n")
    run = cli("pretrain", *arguments)
    assert run.exit_code == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "runs").exists()


def test_an_existing_output_is_kept_without_overwrite(cli, tiny_base, corpus_txt, tiny_pretrained):
    before = snapshot(tiny_pretrained)
    run = cli("pretrain", corpus_txt, "--model", tiny_base, "--output", tiny_pretrained, *QUICK)
    assert run.exit_code == 2 and "--overwrite" in run.error_line
    assert snapshot(tiny_pretrained) == before


def test_fill_mask_returns_k_fillers_with_scores(cli, tiny_pretrained):
    run = cli("fill-mask", "--model", tiny_pretrained, "--top-k", "3", "--format", "json", "the movie was [MASK] .")
    assert run.exit_code == 0, run.stderr
    (result,) = json.loads(run.stdout)
    (fillers,) = result["masks"]
    assert len(fillers) == 3
    scores = [filler["score"] for filler in fillers]
    assert scores == sorted(scores, reverse=True) and all(0 < score <= 1 for score in scores)
    assert all(filler["token"] not in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]") for filler in fillers)
    for filler in fillers:  # the text with the mask filled in (decoded, so spacing around punctuation may change)
        assert filler["sequence"].replace(" ", "") == f"themoviewas{filler['token']}."


def test_fill_mask_table_and_several_masks(cli, tiny_pretrained):
    run = cli("fill-mask", "--model", tiny_pretrained, "[MASK] movie was [MASK] .", "a [MASK] plot")
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "[MASK] movie was [MASK] ." and lines[1].split() == [
        "mask",
        "rank",
        "token",
        "score",
        "sequence",
    ]
    assert sum(1 for line in lines if line[:1].isdigit()) == 3 * 5  # 3 masks x top 5


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["the movie was good ."], "Error: no mask in 'the movie was good .': write [MASK] where a word"),
        (["--top-k", "0", "a [MASK]"], "Invalid value for '--top-k'"),
    ],
)
def test_fill_mask_bad_input(cli, tiny_pretrained, arguments, message):
    run = cli("fill-mask", "--model", tiny_pretrained, *arguments)
    assert run.exit_code == 2 and message in run.stderr


def test_fill_mask_refuses_models_without_a_trained_head(cli, tiny_base, tiny_classifier, tmp_path, monkeypatch):
    run = cli("fill-mask", "--model", tiny_base, "a [MASK] movie")
    assert run.exit_code == 2
    assert f"{tiny_base} has no trained masked-LM head" in run.error_line and "plm pretrain" in run.error_line
    run = cli("fill-mask", "--model", tiny_classifier, "a [MASK] movie")
    assert run.exit_code == 2 and "is a text classifier, not a masked-LM" in run.error_line
    monkeypatch.chdir(tmp_path)
    run = cli("fill-mask", "a [MASK] movie")
    assert (
        run.error_line == "Error: no model at runs/pretrain; pretrain one with `plm pretrain CORPUS`, or pass --model."
    )


def test_fill_mask_accepts_bracket_mask_for_models_with_another_mask_token():
    from plmcli.inference import _with_model_mask

    assert _with_model_mask("a [MASK] film", "<mask>") == "a <mask> film"
    assert _with_model_mask("a <mask> film", "<mask>") == "a <mask> film"
    assert _with_model_mask("a [MASK] film", "[MASK]") == "a [MASK] film"

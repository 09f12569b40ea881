"""`plm finetune --task token-classification` and the use side of its model (plmcli/tasks/token_*.py)."""

import json
import random

import pytest

from tests.conftest import snapshot, write_csv, write_tiny_bert

FIRST = ["angela", "barack", "marie", "pierre", "olaf"]
LAST = ["merkel", "obama", "curie", "dupont", "scholz"]
PLACES = ["paris", "berlin", "london", "rome", "madrid"]
COMPANIES = ["acme", "globex", "initech"]
VERBS = ["visited", "left", "saw", "praised", "joined"]
OTHER = ["the", "city", "of", "in", "and", "today", "with", "staff", "."]


def tagged_sentences(count: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """(word, IOB2 tag) sentences a tiny model can learn: a person does something to a place or a company."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = [(rng.choice(FIRST), "B-PER"), (rng.choice(LAST), "I-PER"), (rng.choice(VERBS), "O")]
        if rng.random() < 0.5:
            words += [("the", "O"), ("city", "O"), ("of", "O"), (rng.choice(PLACES), "B-LOC")]
        else:
            words += [(rng.choice(COMPANIES), "B-ORG"), ("staff", "O")]
        words += [(rng.choice(["today", "."]), "O")]
        sentences.append(words)
    return sentences


def iob1(tags: list[str]) -> list[str]:
    """IOB2 tags as CoNLL-2003 writes them: I- unless an entity follows one of the same type."""
    result = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") and not (i and tags[i - 1][2:] == tag[2:]):
            tag = "I-" + tag[2:]
        result.append(tag)
    return result


def write_conll(path, sentences, scheme: str = "IOB1", columns: int = 4):
    """A CoNLL-2003-style file: -DOCSTART- every 10 sentences, blank lines between sentences."""
    lines = []
    for i, sentence in enumerate(sentences):
        if i % 10 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        tags = [tag for _, tag in sentence]
        tags = iob1(tags) if scheme == "IOB1" else tags
        for (word, _), tag in zip(sentence, tags):
            lines.append(" ".join([word, *(["NN", "I-NP"][: columns - 2]), tag]))
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ner_base(tmp_path_factory):
    """A tiny random BertModel whose vocab holds the words of tagged_sentences (and a sub-word piece)."""
    words = sorted(set(FIRST + LAST + PLACES + COMPANIES + VERBS + OTHER)) + ["##s", "merkels"]
    return write_tiny_bert(tmp_path_factory.mktemp("ner-bert"), words)


def finetune_args(base, data, output, *extra):
    return (
        "finetune", data, "--task", "token-classification", "--model", base, "--output", output,
        "--device", "cpu", "--precision", "fp32", "--epochs", "8", "--batch-size", "16", "--lr", "5e-3", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, ner_base):
    """A tiny token classifier fine-tuned by plm on an IOB1 CoNLL file."""
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    directory = tmp_path_factory.mktemp("ner-data")
    data = write_conll(directory / "train.conll", tagged_sentences(160))
    output = tmp_path_factory.mktemp("ner-model") / "model"
    config = FinetuneConfig(
        data=str(data),
        task="token-classification",
        model=str(ner_base),
        output=str(output),
        epochs=8,
        lr=5e-3,
        batch_size=16,
        device="cpu",
        precision="fp32",
    )
    result = finetune(config)
    return output, result


def test_a_tagger_is_a_standard_token_classifier_with_its_settings_and_entity_scores(tagger):
    from transformers import AutoModelForTokenClassification

    from plmcli.settings import ModelSettings

    output, result = tagger
    model = AutoModelForTokenClassification.from_pretrained(output)
    assert set(model.config.id2label.values()) == {"O", "B-PER", "I-PER", "B-LOC", "B-ORG"}
    settings = ModelSettings.of(model.config)
    assert (settings.task, settings.scheme, settings.source_scheme) == ("token-classification", "IOB2", "IOB1")
    assert settings.max_length == 64  # --max-length 128, at most what the tiny model takes
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["task"] == "token-classification"
    assert metrics["validation"]["f1"] >= 0.9  # the pattern is easy: the tiny model must learn it
    assert set(metrics["validation"]["per_type"]) == {"PER", "LOC", "ORG"}
    assert set(metrics["validation"]["errors"]) == {"correct", "wrong_type", "wrong_boundary", "missed", "spurious"}
    assert {"README.md", "loss_curve.png", "errors.png", "manifest.json"} <= {p.name for p in output.iterdir()}
    assert "not calibrated" in (output / "README.md").read_text()


def test_predict_gives_entities_with_character_offsets(cli, tagger):
    output, _ = tagger
    text = "Angela Merkel visited Paris today"
    run = cli("predict", "--model", output, "--format", "json", text)
    assert run.exit_code == 0, run.stderr
    [row] = json.loads(run.stdout)
    found = [(e["type"], e["text"], e["start"], e["end"]) for e in row["entities"]]
    assert found == [("PER", "Angela Merkel", 0, 13), ("LOC", "Paris", 22, 27)]
    assert all(0 < e["score"] <= 1 for e in row["entities"])


def test_predict_finds_the_entities_transformers_pipeline_finds(cli, tagger):
    from transformers import pipeline

    output, _ = tagger
    texts = ["Barack Obama joined Acme staff .", "olaf scholz left the city of Rome today", "the city of madrid"]
    run = cli("predict", "--model", output, "--format", "jsonl", *texts)
    assert run.exit_code == 0, run.stderr
    ours = [
        [(e["type"], e["start"], e["end"], round(e["score"], 4)) for e in json.loads(line)["entities"]]
        for line in run.stdout.splitlines()
    ]
    reference = pipeline("token-classification", model=str(output), aggregation_strategy="first", device="cpu")
    theirs = [
        [(e["entity_group"], e["start"], e["end"], round(float(e["score"]), 4)) for e in found]
        for found in reference(texts)
    ]
    # Each word's likeliest tag (its first sub-token's), as the pipeline reads them. Where they make a
    # valid IOB2 sequence plm keeps them, and both find the same entities; where an I-X continues nothing,
    # the pipeline starts an entity there and plm takes the likeliest valid sequence instead.
    words = pipeline("token-classification", model=str(output), aggregation_strategy="none", device="cpu")
    likeliest = [
        [token["entity"] for token in tokens if not token["word"].startswith("##")]
        for tokens in words(texts, ignore_labels=[])
    ]
    compared = [index for index, tags in enumerate(likeliest) if valid(tags)]
    assert [ours[i] for i in compared] == [theirs[i] for i in compared]
    assert len(compared) >= 2 and any(ours[i] for i in compared)
    for index in set(range(len(texts))) - set(compared):
        assert ours[index] != theirs[index]  # the pipeline's entity from a dangling I-X is not plm's


def test_predict_on_a_conll_file_adds_a_predicted_tag_column(cli, tagger, tmp_path):
    output, _ = tagger
    data = write_conll(tmp_path / "test.conll", tagged_sentences(12, seed=5), scheme="IOB2")
    before = data.read_text().splitlines()
    run = cli("predict", "--model", output, "--file", data, "--output", tmp_path / "tagged.conll")
    assert run.exit_code == 0, run.stderr
    after = (tmp_path / "tagged.conll").read_text().splitlines()
    assert len(after) == len(before)
    words = [(b, a) for b, a in zip(before, after) if b and not b.startswith("-DOCSTART-")]
    assert all(a.startswith(b + " ") and len(a.split()) == 5 for b, a in words)
    right = sum(a.split()[-1] == b.split()[-1] for b, a in words)
    assert right / len(words) > 0.9


def test_evaluate_reports_types_errors_and_a_file_of_mistakes(cli, tagger, tmp_path):
    output, _ = tagger
    sentences = tagged_sentences(30, seed=7)
    sentences[0][-1] = ("today", "B-LOC")  # a gold entity the model will miss
    data = write_conll(tmp_path / "test.conll", sentences, scheme="IOB2")
    run = cli("evaluate", "--model", output, data, "--output", tmp_path / "report")
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["task"] == "token-classification" and metrics["samples"] == 30
    assert metrics["errors"]["missed"] + metrics["errors"]["wrong_boundary"] >= 1
    assert "entity F1" in run.stdout
    errors = (tmp_path / "report" / "errors.csv").read_text()
    assert "line,sentence,gold,predicted,errors" in errors.splitlines()[0]
    assert (tmp_path / "report" / "errors.png").stat().st_size > 0


def test_check_reports_a_conll_file(cli, tmp_path, ner_base):
    data = write_conll(tmp_path / "train.conll", tagged_sentences(20))
    run = cli("check", data, "--model", ner_base, "--format", "json")
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["sentences"] == 20 and report["scheme"] == "IOB1" and report["converted_to_iob2"]
    assert report["documents"] == 2
    assert set(report["entities"]) == {"PER", "LOC", "ORG"}
    table = cli("check", data, "--model", ner_base)
    assert "converts them to IOB2" in table.stdout


def test_every_word_of_a_long_sentence_is_tagged_once():
    from plmcli.tasks.token_classification import spans_of

    counts = [random.Random(i).randint(1, 4) for i in range(1000)]  # pieces per word
    spans = spans_of(counts, budget=30, stride=8)
    answered = [word for _, _, first, last in spans for word in range(first, last)]
    assert answered == list(range(1000))  # every word once, in order
    for start, end, first, last in spans:
        assert start <= first <= last <= end and sum(counts[start:end]) <= 30


def test_the_training_loss_weighs_every_word_alike_whatever_its_batch():
    import torch

    from plmcli.tasks.token_classification import word_weighted_loss

    class Model:
        training = True

    model = Model()
    compute = word_weighted_loss(model, words_per_batch=4.0)
    logits = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    short = torch.tensor([[1, -100, -100, -100, -100], [2, -100, -100, -100, -100]])  # 2 labelled words
    long = torch.tensor([[0, 1, 2, -100, 1], [2, 2, 0, 1, 0]])  # 9 labelled words
    each = torch.nn.functional.cross_entropy(logits.view(-1, 3), long.view(-1), ignore_index=-100, reduction="none")
    assert torch.isclose(compute({"logits": logits}, long), each.sum() / 4.0)
    # A word's share of the loss is 1/4 in either batch, not 1/2 in the short one and 1/9 in the long one.
    logits.requires_grad_(True)
    for labels in (short, long):
        (gradient,) = torch.autograd.grad(compute({"logits": logits}, labels), logits)
        assert torch.isclose(
            gradient[0, 0].abs().sum(), (torch.softmax(logits[0, 0], -1) - torch.eye(3)[labels[0, 0]]).abs().sum() / 4
        )
    model.training = False  # evaluation: the plain mean over labelled words, as the model's own loss
    mean = torch.nn.functional.cross_entropy(logits.view(-1, 3), long.view(-1), ignore_index=-100)
    assert torch.isclose(compute({"logits": logits}, long), mean)


def test_a_thousand_word_sentence_is_tagged_whole(cli, tagger, tmp_path):
    output, _ = tagger
    words = (["angela", "merkel", "visited", "paris", "today"] * 200)[:1000]
    run = cli("predict", "--model", output, "--format", "json", " ".join(words))
    assert run.exit_code == 0, run.stderr
    found = json.loads(run.stdout)[0]["entities"]
    assert found[-1]["text"] == "paris" and found[-1]["end"] == len(" ".join(words)) - len(" today")
    for kind in ("PER", "LOC"):  # a name at a window's edge has less context; windows overlap so that few do
        assert abs(sum(e["type"] == kind for e in found) - 200) <= 5
    assert "overlapping windows" in run.stderr
    conll = tmp_path / "long.conll"
    conll.write_text("".join(f"{word} O\n" for word in words), encoding="utf-8")
    run = cli("predict", "--model", output, "--file", conll, "--output", tmp_path / "tagged.conll")
    assert run.exit_code == 0, run.stderr
    tagged = (tmp_path / "tagged.conll").read_text().splitlines()
    assert len(tagged) == 1000 and all(len(line.split()) == 3 for line in tagged)  # every word has its tag


def test_serve_answers_entities(tagger):
    from fastapi.testclient import TestClient

    from plmcli.config import ServeConfig
    from plmcli.serving import create_app

    output, _ = tagger
    with TestClient(create_app(ServeConfig(model=str(output), device="cpu"))) as client:
        for _ in range(200):
            if client.get("/health").status_code == 200:
                break
            import time

            time.sleep(0.05)
        answer = client.post("/predict", json={"texts": ["Angela Merkel visited Paris today"]})
        assert answer.status_code == 200, answer.text
        [prediction] = answer.json()["predictions"]
        assert [e["text"] for e in prediction["entities"]] == ["Angela Merkel", "Paris"]
        assert client.post("/predict", json={"texts": ["x"], "top_k": 2}).status_code == 422
        assert client.get("/metadata").json()["task"] == "token-classification"


def test_bf16_training_runs_and_scores(tmp_path, ner_base):
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    data = write_conll(tmp_path / "train.conll", tagged_sentences(40))
    result = finetune(
        FinetuneConfig(
            data=str(data),
            task="token-classification",
            model=str(ner_base),
            output=str(tmp_path / "out"),
            epochs=1,
            batch_size=16,
            device="cpu",
            precision="bf16",
        )
    )
    assert result.metrics["precision"] == "bf16"
    assert 0 <= result.metrics["validation"]["f1"] <= 1


def test_the_same_seed_gives_the_same_metrics(tmp_path, ner_base):
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    data = write_conll(tmp_path / "train.conll", tagged_sentences(40))
    runs = [
        finetune(
            FinetuneConfig(
                data=str(data),
                task="token-classification",
                model=str(ner_base),
                output=str(tmp_path / f"out{i}"),
                epochs=1,
                batch_size=16,
                device="cpu",
                precision="fp32",
            )
        ).metrics["validation"]
        for i in range(2)
    ]
    assert runs[0] == runs[1]


def test_json_lines_with_token_and_tag_lists_train(cli, ner_base, tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [{"tokens": [w for w, _ in s], "ner_tags": [t for _, t in s]} for s in tagged_sentences(40)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    run = cli(*finetune_args(ner_base, data, tmp_path / "out", "--epochs", "1"))
    assert run.exit_code == 0, run.stderr
    assert "entity F1" in run.stdout


# ---- what is refused: one line, exit 2, nothing written ----


def refused(cli, tmp_path, *args) -> str:
    before = snapshot(tmp_path)
    run = cli(*args)
    assert run.exit_code == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert snapshot(tmp_path) == before
    return run.error_line


def test_an_untagged_file_is_refused_by_finetune(cli, ner_base, tmp_path):
    data = tmp_path / "words.conll"
    data.write_text("angela\nmerkel\n\nparis\n", encoding="utf-8")
    line = refused(cli, tmp_path, *finetune_args(ner_base, data, tmp_path / "out"))
    assert line.startswith("Error: ") and "tag" in line


def test_a_bare_prefix_and_mixed_schemes_are_refused(cli, ner_base, tmp_path):
    bare = tmp_path / "bare.conll"
    bare.write_text("angela B-\nmerkel I-PER\n", encoding="utf-8")
    assert "B-" in refused(cli, tmp_path, *finetune_args(ner_base, bare, tmp_path / "out"))
    mixed = tmp_path / "mixed.conll"
    mixed.write_text("angela I-PER\nmerkel I-PER\n\nparis S-LOC\n\nrome I-LOC\n", encoding="utf-8")
    assert refused(cli, tmp_path, *finetune_args(ner_base, mixed, tmp_path / "out")).startswith("Error: ")


def test_tabs_in_some_lines_and_spaces_in_others_are_refused(cli, ner_base, tmp_path):
    data = tmp_path / "mixed.conll"
    data.write_text("angela\tB-PER\nmerkel I-PER\n\nparis\tB-LOC\n", encoding="utf-8")
    assert "tab" in refused(cli, tmp_path, *finetune_args(ner_base, data, tmp_path / "out"))


def test_a_token_with_a_space_and_an_empty_sentence_in_json_are_refused(cli, ner_base, tmp_path):
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_text(json.dumps({"tokens": ["New York", "is"], "tags": ["B-LOC", "O"]}) + "\n", encoding="utf-8")
    assert "New York" in refused(cli, tmp_path, *finetune_args(ner_base, spaced, tmp_path / "out"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"tokens": [], "tags": []}) + "\n", encoding="utf-8")
    assert refused(cli, tmp_path, *finetune_args(ner_base, empty, tmp_path / "out")).startswith("Error: ")


def test_a_tagger_and_a_sentence_classifier_refuse_each_others_data(cli, tagger, tiny_classifier, tmp_path):
    output, _ = tagger
    table = write_csv(tmp_path / "rows.csv", ["text", "label"], [("good film", "positive")])
    assert refused(cli, tmp_path, "evaluate", "--model", output, table, "--output", tmp_path / "r").startswith(
        "Error: "
    )
    conll = write_conll(tmp_path / "test.conll", tagged_sentences(5), scheme="IOB2")
    line = refused(cli, tmp_path, "evaluate", "--model", tiny_classifier, conll, "--output", tmp_path / "r")
    assert "token-classification" in line


def test_sentence_options_are_refused_for_a_tagger(cli, tagger):
    output, _ = tagger
    run = cli("predict", "--model", output, "--top-k", "2", "Angela Merkel")
    assert run.exit_code == 2 and "--top-k is for sentence classifiers" in run.error_line


def test_resume_after_a_stop_ends_with_the_uninterrupted_runs_metrics(cli, ner_base, tmp_path, monkeypatch):
    from tests.test_checkpoints import stop_then_resume

    data = write_conll(tmp_path / "train.conll", tagged_sentences(60))
    args = finetune_args(ner_base, data, tmp_path / "stopped", "--epochs", "2", "--save-steps", "2")
    stop_then_resume(cli, monkeypatch, args, 3)
    straight = cli(*finetune_args(ner_base, data, tmp_path / "straight", "--epochs", "2", "--save-steps", "2"))
    assert straight.exit_code == 0, straight.stderr
    resumed = json.loads((tmp_path / "stopped" / "metrics.json").read_text())["validation"]
    assert resumed == json.loads((tmp_path / "straight" / "metrics.json").read_text())["validation"]


def test_tune_optimises_entity_f1_and_audit_refuses_in_one_line(cli, ner_base, tmp_path):
    data = write_conll(tmp_path / "train.conll", tagged_sentences(60))
    run = cli(
        "tune", data, "--task", "token-classification", "--model", ner_base, "--output", tmp_path / "tuned",
        "--device", "cpu", "--precision", "fp32", "--trials", "1",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    tuned = json.loads((tmp_path / "tuned" / "tune.json").read_text())
    assert tuned["metric"] == "f1" and "--task token-classification" in tuned["best"]["command"]
    audit = cli("audit", data, "--task", "token-classification", "--model", ner_base, "--output", tmp_path / "a")
    assert audit.exit_code == 2 and "not supported" in audit.error_line


# ---- decoding: the likeliest valid IOB2 sequence ----------------------------------------------------------------

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def valid(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_decode_keeps_each_words_likeliest_tag_when_they_make_a_valid_sequence():
    import numpy as np

    from plmcli.tasks.token_classification import decode

    probabilities = np.array([[0.1, 0.8, 0.05, 0.03, 0.02], [0.2, 0.1, 0.6, 0.05, 0.05], [0.9, 0.0, 0.05, 0.05, 0.0]])
    assert decode(probabilities, TAGS) == [1, 2, 0]
    pos = ["NOUN", "VERB", "DET"]  # no I- tags: nothing is constrained
    assert decode(np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]), pos) == [2, 0]


def test_decode_finds_the_likeliest_valid_sequence_where_the_likeliest_tags_are_not_one():
    """Against every sequence of 4 words, on random probabilities: the most probable valid one, never invalid."""
    import itertools

    import numpy as np

    from plmcli.tasks.token_classification import decode

    rng = np.random.default_rng(0)
    repaired = 0
    for _ in range(200):
        probabilities = rng.dirichlet(np.full(len(TAGS), 0.3), size=4)
        chosen = decode(probabilities, TAGS)
        assert valid([TAGS[i] for i in chosen])
        best = max(
            (path for path in itertools.product(range(len(TAGS)), repeat=4) if valid([TAGS[i] for i in path])),
            key=lambda path: sum(np.log(probabilities[word, tag]) for word, tag in enumerate(path)),
        )
        assert tuple(chosen) == best
        repaired += list(chosen) != list(probabilities.argmax(axis=1))
    assert repaired > 20  # the cases where the word-by-word choice was invalid were exercised

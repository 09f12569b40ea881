"""No output is an input or another output, however the paths are spelled: the rule of outputs.check_places.

The property test draws, for every command that writes, each of its path options from one pool of
spellings of a few real files and directories (themselves, symbolic links to them, hard links,
``..`` detours, files inside them, fresh names) and checks what ``check_places`` decides against an
oracle that looks at the files themselves: the inodes a write would replace and those a run reads.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plmcli import config
from plmcli.errors import BAD_INPUT, PlmError
from plmcli.outputs import check_places
from tests.conftest import snapshot, write_csv

# the spellings every path option is drawn from, relative to the tree's root
SPELLINGS = (
    "data.csv",
    "link-data.csv",  # a symbolic link to data.csv
    "hard-data.csv",  # a hard link to data.csv
    "model/../data.csv",
    "other.csv",
    "model",
    "link-model",  # a symbolic link to model/
    "model/config.json",
    "link-model/config.json",
    "model/new.csv",  # a new file in the model's directory
    "model/eval",
    "out",
    "out/x.csv",
    "out/../model",
    "link-out",  # a symbolic link to out/
    "link-out/y.csv",
    "fresh.csv",
    "fresh-2.csv",
    "fresh",
    "fresh/z.csv",
    "corpus",  # a directory of text files
    "corpus/a.txt",
    "corpus/../corpus/a.txt",
    ".",
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("places")
    write_csv(root / "data.csv", ["text", "label"], [("good", "positive")])
    write_csv(root / "other.csv", ["text", "label"], [("bad", "negative")])
    (root / "link-data.csv").symlink_to(root / "data.csv")
    os.link(root / "data.csv", root / "hard-data.csv")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}", encoding="utf-8")
    (root / "model" / "model.safetensors").write_bytes(b"weights")
    (root / "link-model").symlink_to(root / "model")
    (root / "out").mkdir()
    (root / "out" / "x.csv").write_text("text\n", encoding="utf-8")
    (root / "link-out").symlink_to(root / "out")
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text("some text\n", encoding="utf-8")
    return root


def _inode(path: Path, follow: bool = True) -> tuple[int, int]:
    found = os.stat(path) if follow else os.lstat(path)
    return found.st_dev, found.st_ino


def _read(path: Path) -> set[tuple[int, int]]:
    """What a run reads at ``path``: the file, or a directory (a model's) and the files in it."""
    if not path.exists():
        return set()
    return {_inode(path)} | ({_inode(item) for item in path.iterdir() if item.is_file()} if path.is_dir() else set())


def _replaced(path: Path) -> set[tuple[int, int]]:
    """What writing ``path`` replaces: the file, or a directory's whole tree (links inside not followed)."""
    if not path.exists():
        return set()
    found = {_inode(path)}
    if path.is_dir():
        for folder, folders, names in os.walk(path):
            found |= {_inode(Path(folder) / name, follow=False) for name in folders + names}
    return found


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _touches(output: Path, directory: bool, source: Path) -> bool:
    """The oracle: writing ``output`` would replace something the run reads."""
    if directory:
        return bool(_replaced(output) & _read(source)) or _real(source).is_relative_to(_real(output))
    return _real(output) == _real(source) or (output.is_file() and _inode(output) in _read(source))


def _overlap(one: Path, one_directory: bool, other: Path, other_directory: bool) -> bool:
    """The oracle for two outputs: the same place, or one inside a directory the other replaces."""
    return (
        _real(one) == _real(other)
        or (one_directory and _real(other).is_relative_to(_real(one)))
        or (other_directory and _real(one).is_relative_to(_real(other)))
    )


def _configs(draw, root: Path):
    """A command's config with every path option drawn from SPELLINGS (None when its checks refuse it)."""
    pick = st.sampled_from(SPELLINGS).map(lambda name: str(root / name))
    command = draw(st.sampled_from(("finetune", "tune", "audit", "pretrain", "evaluate", "predict")))
    data, model, output, second = draw(pick), draw(pick), draw(pick), draw(pick)
    if command in ("finetune", "tune"):
        validation = draw(st.one_of(st.none(), pick))
        resume = draw(st.booleans())
        kind = config.FinetuneConfig if command == "finetune" else config.TuneConfig
        return kind(data=data, validation=validation, model=model, output=output, resume=resume)
    if command == "audit":
        return config.AuditConfig(data=data, model=model, output=output, fix_out=second.replace(".json", ".csv"))
    if command == "pretrain":
        return config.PretrainConfig(corpus=[data, second], model=model, output=output)
    if command == "evaluate":
        return config.EvaluateConfig(data=data, model=model, output=draw(st.one_of(st.none(), pick)))
    return config.PredictConfig(file=data, model=model, output=output, review_file=second, min_score=0.5)


@st.composite
def commands(draw, root):
    try:
        return _configs(draw, root)
    except PlmError:  # a combination a command's own checks refuse: nothing to decide here
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_output_is_never_an_input_or_another_output(tree, data):
    chosen = data.draw(commands(tree))
    if chosen is None:
        return
    places = chosen.places()
    before = snapshot(tree)
    try:
        check_places(places)
        accepted = True
    except PlmError as error:
        assert error.exit_code == BAD_INPUT and "\n" not in str(error)
        accepted = False
    event("accepted" if accepted else "refused")
    assert snapshot(tree) == before
    reads = [Path(path) for _, path in places.reads if path and os.path.lexists(path)]
    writes = [(Path(path), True) for _, path in places.directories if path]
    writes += [(Path(path), False) for _, path in places.files if path]
    if accepted:
        for output, directory in writes:
            assert not any(_touches(output, directory, source) for source in reads), (places, output)
        for index, (one, one_directory) in enumerate(writes):
            assert not any(_overlap(one, one_directory, *other) for other in writes[index + 1 :]), places


def test_distinct_places_are_accepted(tree, tmp_path):
    check_places(
        config.PredictConfig(
            file=str(tree / "data.csv"),
            model=str(tree / "model"),
            output=str(tmp_path / "labels.csv"),
            review_file=str(tree / "model" / "review.csv"),  # a new file beside the model is no input
            min_score=0.5,
        ).places()
    )
    check_places(
        config.EvaluateConfig(data=str(tree / "data.csv"), model=str(tree / "model")).places()
    )  # <model>/eval
    check_places(
        config.FinetuneConfig(
            data=str(tree / "data.csv"), model=str(tree / "link-model"), output=str(tree / "model" / "tuned")
        ).places()
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda t: config.PredictConfig(
                texts=["a"], output=f"{t}/fresh.csv", review_file=f"{t}/fresh.csv", min_score=0.5
            ),
            "--output {t}/fresh.csv and --review-file {t}/fresh.csv are the same file; write them apart.",
        ),
        (
            lambda t: config.PredictConfig(
                texts=["a"], output=f"{t}/fresh.csv", review_file=f"{t}/fresh/../fresh.csv", min_score=0.5
            ),
            "--output {t}/fresh.csv and --review-file {t}/fresh/../fresh.csv are the same file; write them apart.",
        ),
        (
            lambda t: config.PredictConfig(file=f"{t}/data.csv", output=f"{t}/hard-data.csv"),
            "--output {t}/hard-data.csv is the input file {t}/data.csv, which this command reads; "
            "choose another --output.",
        ),
        (
            lambda t: config.PredictConfig(texts=["a"], model=f"{t}/link-model", output=f"{t}/model/config.json"),
            "--output {t}/model/config.json is a file of {t}/link-model, which this command reads; "
            "choose another --output.",
        ),
        (
            lambda t: config.AuditConfig(data=f"{t}/data.csv", output=f"{t}/fresh", fix_out=f"{t}/fresh/clean.csv"),
            "--fix-out {t}/fresh/clean.csv is inside --output {t}/fresh, which the run replaces; "
            "choose another --fix-out.",
        ),
        (
            lambda t: config.AuditConfig(data=f"{t}/data.csv", output=f"{t}/link-out", fix_out=f"{t}/out/clean.csv"),
            "--fix-out {t}/out/clean.csv is inside --output {t}/link-out, which the run replaces; "
            "choose another --fix-out.",
        ),
        (
            lambda t: config.FinetuneConfig(data=f"{t}/out/x.csv", output=f"{t}/link-out", resume=True),
            "--output {t}/link-out holds the input {t}/out/x.csv; choose another --output.",
        ),
        (
            lambda t: config.TuneConfig(
                data=f"{t}/data.csv", validation=f"{t}/out/x.csv", output=f"{t}/out", resume=True
            ),
            "--output {t}/out holds the input {t}/out/x.csv; choose another --output.",
        ),
        (
            lambda t: config.EvaluateConfig(data=f"{t}/data.csv", model=f"{t}/model", output=f"{t}/out/../model"),
            "--output {t}/out/../model holds the input {t}/model; choose another --output.",
        ),
        (
            lambda t: config.PretrainConfig(corpus=[f"{t}/corpus/*.txt"], output=f"{t}/corpus/.."),
            "--output {t}/corpus/.. holds the input {t}/corpus/a.txt; choose another --output.",
        ),
    ],
)
def test_each_route_to_an_alias_is_refused_in_one_line(tree, make, message):
    with pytest.raises(PlmError) as refused:
        check_places(make(tree).places())
    assert str(refused.value) == message.format(t=tree)
    assert refused.value.exit_code == BAD_INPUT

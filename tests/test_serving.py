"""`plm serve`: a real server in a subprocess, a real HTTP client; the same answers as `plm predict`."""

import json
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from plmcli.config import ServeConfig
from plmcli.serving import create_app
from tests.conftest import plm_command, sentiment_rows

KEY = "s3cret-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`plm serve` in a subprocess on a free port; ``url`` once /health answers 200."""

    def __init__(self, model, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = []
        self.process = subprocess.Popen(
            plm_command("serve", "--model", model, "--port", self.port, "--device", "cpu", *options),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=lambda: self.log.extend(self.process.stdout), daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "".join(self.log)
            time.sleep(0.2)
        raise AssertionError(f"plm serve did not get ready: {''.join(self.log)}")

    def logged(self, wanted, seconds: float = 10) -> list[str]:
        """The log lines holding the text ``wanted`` (or for which it is true), waiting for them: a thread reads
        the log, which may lag the answers."""
        deadline = time.monotonic() + seconds
        while True:
            lines = [line for line in self.log if (wanted(line) if callable(wanted) else wanted in line)]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tiny_classifier):
    running = Server(tiny_classifier, "--api-key", KEY, "--max-texts-per-request", "8", "--max-body-bytes", "4000")
    yield running
    assert running.stop() == 0
    assert not any("Traceback" in line for line in running.log), "".join(running.log)


def _post(server, body, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/predict", json=body, headers=headers, timeout=60, **kwargs)


def _predict_json(cli, model, texts) -> list[dict]:
    run = cli("predict", "--model", model, *texts, "--format", "json", "--top-k", "2", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    return json.loads(run.stdout)


def _tolerance(server) -> float:
    precision = httpx.get(f"{server.url}/metadata", headers={"Authorization": f"Bearer {KEY}"}).json()["precision"]
    return 1e-5 if precision == "fp32" else 2e-2  # batches of other texts: sums in another order


def test_answers_are_plm_predicts_also_under_64_concurrent_requests(cli, server, tiny_classifier):
    texts = [text for text, _ in sentiment_rows(64, seed=9)]
    expected = _predict_json(cli, tiny_classifier, texts)
    together = _post(server, {"texts": texts[:8], "top_k": 2})
    assert together.status_code == 200
    with ThreadPoolExecutor(64) as pool:
        alone = list(pool.map(lambda text: _post(server, {"texts": [text], "top_k": 2}), texts))
    answers = together.json()["predictions"] + [response.json()["predictions"][0] for response in alone[8:]]
    assert all(response.status_code == 200 for response in alone)
    tolerance = _tolerance(server)
    for answer, row in zip(answers, expected[:8] + expected[8:]):
        assert (answer["label"], answer["label_2"]) == (row["label"], row["label_2"])
        assert answer["score"] == pytest.approx(row["score"], abs=tolerance)
        assert set(answer) == {"label", "score", "label_2", "score_2"}
    assert server.logged(lambda line: "batch=" in line and " batch=1 " not in line)  # requests were gathered


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"texts": []}, 422, "texts is empty: give at least one text."),
        ({"texts": ["good", "  "]}, 422, "texts.1 is empty; give texts with words in them."),
        ({"texts": "good"}, 422, "texts: Input should be a valid list."),
        ({"texts": [1]}, 422, "texts.0: Input should be a valid string."),
        ({"text": ["good"]}, 422, "texts: Field required."),
        ({"texts": ["good"], "top_k": "2"}, 422, "top_k: Input should be a valid integer."),
        ({"texts": ["good"], "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1."),
        ({"texts": ["good"], "text_pairs": ["bad"]}, 422, "this model classifies single texts: leave out text_pairs."),
        ({"texts": ["good"] * 9}, 413, "9 texts in one request; at most 8 (--max-texts-per-request)."),
        ({"texts": ["good " * 1000]}, 413, "the body is larger than 4000 bytes (--max-body-bytes)."),
        ([1, 2], 422, 'the body must be a JSON object like {"texts": ["..."]}, sent as application/json.'),
    ],
)
def test_bad_requests_get_a_4xx_with_one_line(server, body, status, message):
    response = _post(server, body)
    assert (response.status_code, response.json()) == (status, {"error": message})


def test_malformed_json_and_unknown_paths(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{server.url}/predict", content=b'{"texts": ["a"', headers=headers)
    assert response.status_code == 400 and response.json()["error"].startswith("the body is not valid JSON")
    assert httpx.get(f"{server.url}/nowhere", headers=headers).json() == {"error": "Not Found"}


def test_the_api_key_guards_all_but_health(server):
    for key in (None, "wrong"):
        response = _post(server, {"texts": ["good"]}, key=key)
        assert response.status_code == 401
        assert response.json() == {"error": "missing or wrong API key: send the header 'Authorization: Bearer KEY'."}
        assert httpx.get(f"{server.url}/metadata", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


def test_metadata_long_texts_and_the_access_log(server, tiny_classifier):
    metadata = httpx.get(f"{server.url}/metadata", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert metadata["task"] == "single-label" and metadata["labels"] == ["negative", "positive"]
    assert metadata["max_length"] == 64 and metadata["lineage"][-1].endswith(str(tiny_classifier))
    answer = _post(server, {"texts": ["good " * 100, "bad"]}).json()["predictions"]
    assert answer[0]["truncated"] is True and "truncated" not in answer[1]
    assert server.logged('"POST /predict" 200 texts=2')
    assert "good good" not in "".join(server.log)  # texts are not logged without --log-texts


def test_health_is_503_until_the_model_has_answered_a_warm_up(tiny_classifier):
    from fastapi.testclient import TestClient

    from plmcli.inference import load_for_inference

    config = ServeConfig(model=str(tiny_classifier), device="cpu")
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return load_for_inference(config, plain_bert=True)

    with TestClient(create_app(config, load=slow_load)) as client:
        assert (client.get("/health").status_code, client.post("/predict", json={"texts": ["x"]}).status_code) == (
            503,
            503,
        )
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post("/predict", json={"texts": ["good"]}).status_code == 200


def test_sigterm_answers_what_is_in_flight_and_exits_0(tiny_classifier):
    running = Server(tiny_classifier, "--max-wait-ms", "1500")  # a batch waits 1.5 s for more requests
    with ThreadPoolExecutor(16) as pool:
        pending = [pool.submit(_post, running, {"texts": [text]}, None) for text, _ in sentiment_rows(16)]
        time.sleep(0.7)  # all sent, their batch still gathering
        code = running.stop()
        statuses = [future.result().status_code for future in pending]
    assert code == 0 and statuses == [200] * 16, "".join(running.log)
    assert "Stopped." in "".join(running.log)


def test_a_port_in_use_or_a_missing_model_is_one_line(tiny_classifier, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            plm_command("serve", "--model", tiny_classifier, "--port", port), capture_output=True, text=True
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    result = subprocess.run(plm_command("serve", "--model", tmp_path / "none"), capture_output=True, text=True)
    assert (result.returncode, result.stderr.strip()) == (2, f"Error: model directory not found: {tmp_path / 'none'}")


def test_min_score_abstains_as_predict_does(server):
    texts = [text for text, _ in sentiment_rows(8, seed=3)]
    plain = _post(server, {"texts": texts}).json()["predictions"]
    threshold = sorted(row["score"] for row in plain)[4]
    answer = _post(server, {"texts": texts, "min_score": min(threshold, 0.999999)}).json()["predictions"]
    for before, after in zip(plain, answer):
        assert after["score"] == before["score"]
        assert after["label"] == (None if before["score"] < min(threshold, 0.999999) else before["label"])
    assert _post(server, {"texts": texts, "min_score": 1.5}).status_code == 422

"""`plm serve`: a real server in a subprocess, a real HTTP client; the same answers as `plm predict`."""

import json
import random
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


def _wait_ready(url: str, process, log: list) -> None:
    """Wait until /health answers 200 (the model loaded and warm), for two minutes at most."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, "".join(log)
        time.sleep(0.2)
    raise AssertionError(f"plm serve did not get ready: {''.join(log)}")


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
        _wait_ready(self.url, self.process, self.log)

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


def _raw(port: int, request: bytes, wait: float = 15) -> tuple[int, dict]:
    """Send bytes as they are (malformed HTTP too) and read the answer: (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
            piece = connection.recv(65536)
            if not piece:
                break
            received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(received: bytes) -> int:
    head = received.partition(b"\r\n\r\n")[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def _slow_body(port: int) -> tuple[int, dict]:
    """Headers that promise 100 bytes of body, then nothing: answered when --timeout runs out."""
    return _raw(
        port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )


def _chunked(url: str, size: int) -> httpx.Response:
    """A body with no Content-Length, sent in chunks (Transfer-Encoding: chunked)."""
    pieces = iter([b'{"texts": ["' + b"a" * (size - 16) + b'"]}'[i : i + 1000] for i in range(0, size, 1000)])
    return httpx.post(f"{url}/predict", content=pieces, headers={"Content-Type": "application/json"}, timeout=60)


def test_under_load_every_valid_request_is_answered_whatever_the_bad_ones_send(cli, tiny_classifier):
    """A bounded load test on loopback: valid requests mixed with each kind of malformed one, concurrently."""
    texts = [text for text, _ in sentiment_rows(24, seed=5)]
    expected = _predict_json(cli, tiny_classifier, texts)
    server = Server(tiny_classifier, "--max-body-bytes", "4000", "--timeout", "3", "--max-wait-ms", "20")
    headers = {"Content-Type": "application/json"}
    bad = {
        "lone surrogate": (
            lambda: httpx.post(f"{server.url}/predict", content=b'{"texts": ["good \\ud800 film"]}', headers=headers),
            422,
            "texts.0 is not text: it holds a lone surrogate (\\ud800) at character 6; send UTF-8 text.",
        ),
        "surrogate pair": (
            lambda: httpx.post(f"{server.url}/predict", content=b'{"texts": ["ok", "\\udc80"]}', headers=headers),
            422,
            "texts.1 is not text",
        ),
        "chunked and too large": (lambda: _chunked(server.url, 20_000), 413, "the body is larger than 4000 bytes"),
        "Content-Length not a number": (
            lambda: _raw(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"),
            400,
            "",
        ),
        "not HTTP": (lambda: _raw(server.port, b"GARBAGE\x00\x01 NOT HTTP\r\n\r\n"), 400, "malformed HTTP request"),
        "body never sent": (lambda: _slow_body(server.port), 408, "the body did not arrive within 3 s (--timeout)."),
        "not JSON": (
            lambda: httpx.post(f"{server.url}/predict", content=b'{"texts": [', headers=headers),
            400,
            "the body is not valid JSON",
        ),
    }
    jobs = [("valid", index) for index in range(len(texts))] + [(kind, None) for kind in bad for _ in range(2)]
    random.Random(0).shuffle(jobs)

    def send(job):
        kind, index = job
        if kind == "valid":
            return httpx.post(f"{server.url}/predict", json={"texts": [texts[index]], "top_k": 2}, timeout=60)
        return bad[kind][0]()

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, jobs))
    finally:
        assert server.stop() == 0
    for (kind, index), result in zip(jobs, results):
        status, body = (result.status_code, result.json()) if isinstance(result, httpx.Response) else result
        if kind == "valid":
            assert status == 200, (kind, body)
            answer, row = body["predictions"][0], expected[index]
            assert (answer["label"], answer["label_2"]) == (row["label"], row["label_2"])
            assert answer["score"] == pytest.approx(row["score"], abs=2e-2)
        else:
            assert status == bad[kind][1] and set(body) == {"error"} and bad[kind][2] in body["error"], (kind, body)
    assert not any("Traceback" in line for line in server.log), "".join(server.log)


def test_one_failing_request_does_not_fail_the_others_batched_with_it():
    import asyncio

    import numpy as np

    from plmcli.serving import Batcher

    class Model:
        device = "cpu"

        def scores(self, texts, forward, pairs):
            if "poison" in texts:
                raise RuntimeError("cannot encode this text")
            return np.array([[len(text)] for text in texts], dtype=float), None

    async def together():
        batcher = Batcher(Model(), max_batch_size=64, max_wait=0.05)
        batcher.busy = True  # under load: requests are gathered
        running = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(
            *(batcher.predict(texts, None) for texts in (["a"], ["poison"], ["ccc", "dd"])), return_exceptions=True
        )
        running.cancel()
        batcher.worker.shutdown(wait=False)
        return answers

    first, failed, third = asyncio.run(together())
    assert isinstance(failed, RuntimeError)
    assert first[0].tolist() == [[1.0]] and third[0].tolist() == [[3.0], [2.0]]


def test_port_0_announces_the_port_it_bound(tiny_classifier):
    process = subprocess.Popen(
        plm_command("serve", "--model", tiny_classifier, "--port", "0", "--device", "cpu"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = next(line for line in process.stderr if "Serving" in line)
        port = int(line.split("http://127.0.0.1:")[1].split(" ")[0])
        assert port > 0
        _wait_ready(f"http://127.0.0.1:{port}", process, [])
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json() == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def _drawn(schema: dict, components: dict):
    """A hypothesis strategy for JSON values that ``schema`` (the part of JSON Schema OpenAPI uses here) allows.

    Beside the values it allows, each draw may bend one rule (a value out of range, a field of another
    type, a required field missing, an unknown field): the server must answer those with a documented 4xx.
    """
    from hypothesis import strategies as st

    if "$ref" in schema:
        return _drawn(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in schema:
        return st.one_of([_drawn(option, components) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = [name for name in schema.get("required", []) if name in properties]
        optional = {name: _drawn(value, components) for name, value in properties.items() if name not in required}
        valid = st.fixed_dictionaries(
            {name: _drawn(properties[name], components) for name in required}, optional=optional
        )
        bent = st.one_of(
            valid.map(lambda body: {key: value for key, value in body.items() if key not in required[:1]}),
            st.tuples(valid, st.text(min_size=1, max_size=6)).map(lambda pair: {**pair[0], f"x{pair[1]}": 1}),
        )
        return st.one_of(valid, valid, bent)
    if kind == "array":
        return st.lists(_drawn(schema.get("items", {}), components), max_size=10)
    if kind == "string":
        return st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "a good film", "\u00e9t\u00e9 \u4e2d\u6587"]))
    if kind == "integer":
        low = int(schema.get("minimum", -(2**40)))
        return st.one_of(st.integers(low, low + 50), st.integers(-(2**63), 2**63))
    if kind == "number":
        return st.one_of(
            st.floats(schema.get("exclusiveMinimum", -1e9), schema.get("exclusiveMaximum", 1e9), exclude_min=True,
                      exclude_max=True),
            st.floats(allow_nan=False, allow_infinity=False),
        )  # fmt: skip
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.none() | st.integers() | st.text(max_size=8)


def test_requests_drawn_from_the_openapi_schema_get_no_5xx_and_only_documented_answers(server):
    """hypothesis over the server's own OpenAPI schema: no 5xx, and every answer documented there and shaped so."""
    import jsonschema
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    components = schema["components"]["schemas"]
    operation = schema["paths"]["/predict"]["post"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    answers = operation["responses"]
    bodies = st.one_of(_drawn(request, components), st.none() | st.integers() | st.lists(st.text(max_size=4)))

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies)
    def answered_as_documented(body):
        response = _post(server, body)
        assert response.status_code < 500, (body, response.text)
        documented = answers.get(str(response.status_code))
        assert documented is not None, (body, response.status_code, response.text)
        shape = documented["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**shape, "components": schema["components"]})

    answered_as_documented()

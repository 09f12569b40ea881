"""`plm serve`: a fine-tuned model as a warm HTTP service (FastAPI on uvicorn).

POST /predict answers with the prediction fields `plm predict --format json` gives for the same
texts, in input order; GET /health is 503 until the model is loaded and has answered a warm-up,
then 200; GET /metadata describes the model. Concurrent requests are gathered into batches of up
to --max-batch-size texts (the first waits at most --max-wait-ms for others to join) and run one
batch at a time on one worker thread, longest first as predict runs them, while the event loop
goes on accepting. Every error is a JSON body {"error": "one line"}, never a traceback; each
request is one access-log line on stderr. On SIGTERM or Ctrl-C the server stops accepting,
answers what is in flight and exits 0.
"""

import asyncio
import hmac
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np

from plmcli import __version__, console, interrupts
from plmcli.config import ServeConfig
from plmcli.errors import RUNTIME_FAILURE, PlmError

WARM_UP = "A short text that warms the model up."
ERRORS = {  # every error answer is {"error": "one line"}; what each status means here
    400: "The request is not well-formed HTTP, or its body is not JSON.",
    401: "The API key is missing or wrong (--api-key).",
    404: "No such path.",
    405: "The path does not take this method.",
    408: "The body did not arrive within --timeout.",
    413: "The body, or its number of texts, is over the server's limit.",
    422: "The JSON is not a request this model can answer (the message says which field).",
    500: "The model failed on these texts; the server's log has one line on it.",
    503: "The model is still loading.",
    504: "No answer within --timeout.",
}
CPU_FORWARD = 8  # texts per forward pass on a CPU


@dataclass
class _Job:
    """One request's texts waiting for the model; ``answer`` gets (outputs, texts in its batch)."""

    texts: list[str]
    pairs: Optional[list[str]]
    answer: asyncio.Future


class Batcher:
    """Gathers the texts of concurrent requests into batches, run one at a time on one worker thread."""

    def __init__(self, classifier, max_batch_size: int, max_wait: float) -> None:
        self.classifier, self.max_batch_size, self.max_wait = classifier, max_batch_size, max_wait
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plm-model")
        self.busy = False  # whether the last batch gathered more than one request
        # A gathered batch runs sorted by length in forward passes of this many texts: on a CPU small
        # passes pad little (31 SST-2 sentences: 120 texts/s in passes of 8, 82 in one pass of 32).
        self.forward = max_batch_size if classifier.device != "cpu" else min(max_batch_size, CPU_FORWARD)

    async def predict(self, texts: list[str], pairs: Optional[list[str]]) -> tuple[np.ndarray, int]:
        """The model's outputs (texts, labels) for ``texts`` and how many texts their batch held."""
        answer = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(texts, pairs, answer))
        return await answer

    async def run(self) -> None:
        """Take the first waiting request, gather more for up to max_wait or max_batch_size texts, run, answer."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            # Wait for more only under load (the last batch gathered several requests): alone, run at once.
            count, deadline = len(jobs[0].texts), loop.time() + (self.max_wait if self.busy else 0)
            while count < self.max_batch_size:
                try:
                    job = (
                        self.queue.get_nowait()
                        if not self.queue.empty()
                        else await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
                    )
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                count += len(job.texts)
            self.busy = len(jobs) > 1
            jobs = [job for job in jobs if not job.answer.done()]  # a request that timed out is not run
            if jobs:
                await self._answer(jobs)

    async def _answer(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        pairs = [pair for job in jobs for pair in job.pairs] if jobs[0].pairs is not None else None
        try:
            outputs, _ = await asyncio.get_running_loop().run_in_executor(
                self.worker, self.classifier.scores, texts, self.forward, pairs
            )
        except Exception as exc:  # answered as a 500 (a PlmError as its line), the server goes on
            if len(jobs) > 1:  # one request's texts must not fail the others': each runs again alone
                for job in jobs:
                    await self._answer([job])
                return
            if not jobs[0].answer.done():
                jobs[0].answer.set_exception(exc)
            return
        start = 0
        for job in jobs:
            if not job.answer.done():
                job.answer.set_result((outputs[start : start + len(job.texts)], len(texts)))
            start += len(job.texts)


@dataclass
class _State:
    """What the app knows: the model once loaded and warm, and why loading failed if it did."""

    classifier: object = None
    use: object = None  # the model's task's use side (plmcli.tasks.base.Use)
    batcher: Optional[Batcher] = None
    ready: bool = False
    failure: Optional[BaseException] = None
    stop: Callable[[], None] = lambda: None  # asks the server to shut down (set by serve)
    tasks: list = field(default_factory=list)


class Edge:
    """The ASGI layer in front of the app: the API key, the body size, and one access-log line per request.

    Plain ASGI rather than FastAPI middleware, which costs a task and a copy of each response.
    The endpoint leaves ``texts``, ``batch`` and (with --log-texts) ``logged`` in the request's state.
    """

    def __init__(self, app, config: ServeConfig) -> None:
        self.app, self.config = app, config
        self.key = config.api_key.encode() if config.api_key is not None else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [0]
        state = scope.setdefault("state", {})
        headers = dict(scope["headers"])

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        declared = headers.get(b"content-length", b"0").strip()
        if self.key is not None and scope["path"] != "/health" and not _authorised(headers, self.key):
            await _respond(sending, 401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'.")
        elif not declared.isdigit():
            await _respond(sending, 400, "the Content-Length header is not a number of bytes.")
        elif int(declared) > self.config.max_body_bytes:
            await _respond(sending, 413, self.too_large)
        else:
            body, problem = await self._body(receive)
            if problem is not None:
                await _respond(sending, *problem)
            elif body is not None:  # else the client left before its body came: nobody to answer
                await self._run(scope, _replay(body, receive), sending, status)
        client = scope.get("client") or ("-",)
        logged = state.get("logged") if self.config.log_texts else None  # texts only when asked
        console.info(
            f'{client[0]} "{scope["method"]} {scope["path"]}" {status[0]} texts={state.get("texts", 0)} '
            f"batch={state.get('batch', 0)} {1000 * (time.perf_counter() - started):.1f} ms"
            + (f" {json.dumps(logged, ensure_ascii=False)}" if logged else "")
        )

    @property
    def too_large(self) -> str:
        return f"the body is larger than {self.config.max_body_bytes} bytes (--max-body-bytes)."

    async def _body(self, receive) -> tuple[Optional[bytes], Optional[tuple[int, str]]]:
        """The whole body, however it is sent (chunked too), read up to --max-body-bytes within --timeout.

        (body, None), or (None, (status, message)) to answer instead; (None, None) when the client left.
        """
        loop = asyncio.get_running_loop()
        deadline, chunks, size = loop.time() + self.config.timeout, [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return None, (408, f"the body did not arrive within {self.config.timeout:g} s (--timeout).")
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return None, (413, self.too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    async def _run(self, scope, receive, send, status: list) -> None:
        """The app on one request; a bug inside it is a JSON 500 with one line in the log, never a plain-text page."""
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            console.error(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            if not status[0]:
                await _respond(send, 500, "internal error; the server's log has one line on it.")


def _replay(body: bytes, receive):
    """An ASGI receive that gives the app the body read already, then waits on the client (a disconnect)."""
    given = False

    async def replay():
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def json_errors_protocol():
    """uvicorn's HTTP protocol answering malformed HTTP with plm's JSON error instead of plain text.

    The one place plm reaches into uvicorn: its protocols' ``send_400_response``. Where a uvicorn
    version lacks it, the stock protocol ("auto") serves, with its plain-text answer.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as stock
    except ImportError:  # no httptools: uvicorn's pure-Python protocol
        from uvicorn.protocols.http.h11_impl import H11Protocol as stock
    if not callable(getattr(stock, "send_400_response", None)):
        return "auto"

    class JsonErrors(stock):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": f"malformed HTTP request ({msg.rstrip('.')})."}).encode()
            head = (
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()

    return JsonErrors


async def _respond(send, status: int, message: str) -> None:
    """A whole JSON error response {"error": message}, sent before the app sees the request."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(config: ServeConfig, load: Optional[Callable[[], object]] = None):
    """The FastAPI app of ``config``; ``load`` returns the classifier (default: load_for_inference), in a thread."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
    from starlette.exceptions import HTTPException  # what the router raises (404, 405), FastAPI's is a subclass

    state = _State()
    if load is None:
        from plmcli.tasks import use_of

        def load():
            use = use_of(config.model, config.allow_pickle)
            state.use = use
            return use.load(config)

    async def start() -> None:
        try:
            classifier = await asyncio.to_thread(load)
            if state.use is None:  # a test's own loader: the sentence models' use side
                from plmcli.tasks import use_side

                state.use = use_side(classifier.settings.task)
            pair = state.use.warm_up_pairs(classifier)
            started = time.perf_counter()
            await asyncio.to_thread(classifier.scores, [WARM_UP], 1, pair)
        except Exception as exc:  # a PlmError is the command's error line; anything else a bug, with traceback
            state.failure = exc
            state.stop()
            return
        state.classifier = classifier
        state.batcher = Batcher(classifier, config.max_batch_size, config.max_wait_ms / 1000)
        state.tasks.append(asyncio.create_task(state.batcher.run()))
        state.ready = True
        console.info(
            f"Ready: {config.model} on {classifier.device} in {classifier.precision}; a warm-up text took "
            f"{1000 * (time.perf_counter() - started):.0f} ms."
        )

    @asynccontextmanager
    async def lifespan(app):
        state.tasks.append(asyncio.create_task(start()))
        yield
        for task in state.tasks:
            task.cancel()
        if state.batcher is not None:
            state.batcher.worker.shutdown(wait=False)

    app = FastAPI(title="plm serve", version=__version__, lifespan=lifespan)
    app.state.plm = state

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[StrictStr]
        text_pairs: Optional[list[StrictStr]] = None
        top_k: StrictInt = Field(1, ge=1)
        all_scores: StrictBool = False
        min_score: Optional[float] = Field(None, gt=0, lt=1)  # below it a row's label is null (abstains)

    class ErrorBody(BaseModel):
        error: str  # one line: what was wrong, and what to send instead

    class PredictResponse(BaseModel):
        predictions: list[dict[str, Any]]  # per text, the fields `plm predict --format json` writes

    class HealthResponse(BaseModel):
        status: str

    def answers(model, *statuses: int) -> dict:
        """A route's answers for the OpenAPI schema (documented, not validated at run time): ``model`` with
        200, an ErrorBody with each of ``statuses``."""
        return {200: {"model": model}} | {
            status: {"model": ErrorBody, "description": ERRORS[status]} for status in statuses
        }

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problem = exc.errors()[0]
        if problem.get("type") == "json_invalid":
            return error(400, f"the body is not valid JSON ({problem.get('ctx', {}).get('error', 'malformed')}).")
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        if not where:
            return error(422, 'the body must be a JSON object like {"texts": ["..."]}, sent as application/json.')
        return error(422, f"{where}: {problem.get('msg', 'invalid')}.")

    everywhere = (400, 401, 404, 405, 408, 413, 500, 503)

    @app.get("/health", response_model=None, responses=answers(HealthResponse, *everywhere))
    async def health():
        if not state.ready:
            return error(503, "the model is loading.")
        return {"status": "ok"}

    @app.get("/metadata", response_model=None, responses=answers(dict[str, Any], *everywhere))
    async def metadata():
        if not state.ready:
            return error(503, "the model is loading.")
        return describe(config, state.classifier, state.use)

    @app.post("/predict", response_model=None, responses=answers(PredictResponse, *everywhere, 422, 504))
    async def predict(body: PredictRequest, request: Request):
        if not state.ready:
            return error(503, "the model is loading.")
        request.state.texts = len(body.texts)
        request.state.logged = body.texts
        problem = _check(body, config) or state.use.request_problem(body, state.classifier, config)
        if problem is not None:
            return error(*problem)
        try:
            outputs, batch = await asyncio.wait_for(state.batcher.predict(body.texts, body.text_pairs), config.timeout)
        except asyncio.TimeoutError:
            return error(504, f"no answer within {config.timeout:g} s (--timeout).")
        except PlmError as exc:
            console.error(str(exc))
            return error(500, str(exc))
        except Exception as exc:  # a bug: one line here, the server goes on
            console.error(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            return error(500, "internal error; the server's log has one line on it.")
        request.state.batch = batch
        return {"predictions": state.use.answers(state.classifier, body, outputs, config.model)}

    return app


def _authorised(headers: dict, key: bytes) -> bool:
    """Whether the request's headers carry "Authorization: Bearer KEY" (compared in constant time)."""
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)


def _check(body, config: ServeConfig) -> Optional[tuple[int, str]]:
    """(status, message) for a request no model can answer as asked, else None."""
    count = len(body.texts)
    if count == 0:
        return 422, "texts is empty: give at least one text."
    if count > config.max_texts_per_request:
        return 413, f"{count} texts in one request; at most {config.max_texts_per_request} (--max-texts-per-request)."
    for name, items in (("texts", body.texts), ("text_pairs", body.text_pairs or [])):
        for number, text in enumerate(items):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # JSON's \ud800 escapes: a lone surrogate is no character
                return 422, (
                    f"{name}.{number} is not text: it holds a lone surrogate (\\u{ord(text[exc.start]):04x}) at "
                    f"character {exc.start + 1}; send UTF-8 text."
                )
    empty = next((i for i, text in enumerate(body.texts) if not text.strip()), None)
    if empty is not None:
        return 422, f"texts.{empty} is empty; give texts with words in them."
    return None


def sequence_request_problem(body, classifier, config: ServeConfig) -> Optional[tuple[int, str]]:
    """(status, message) for a request a sentence classifier or regressor cannot answer as asked, else None."""
    count = len(body.texts)
    pair_column = classifier.settings.text_pair_column
    if pair_column and (body.text_pairs is None or len(body.text_pairs) != count):
        return 422, f"this model classifies text pairs: give text_pairs, one for each of the {count} texts."
    if not pair_column and body.text_pairs is not None:
        return 422, "this model classifies single texts: leave out text_pairs."
    if classifier.regression and (body.top_k > 1 or body.all_scores):
        return (
            422,
            "this is a regression model: it gives one value per text; top_k and all_scores are for classifiers.",
        )
    if body.min_score is not None and (classifier.regression or classifier.multi_label):
        return 422, "min_score is for single-label classifiers."
    return None


def sequence_answers(classifier, body, outputs: np.ndarray, model: str) -> list[dict]:
    """The prediction fields of each text, as `plm predict --format json` writes them, and truncated: true if cut."""
    from plmcli.prediction import Layout

    options = SimpleNamespace(
        top_k=body.top_k,
        all_scores=body.all_scores,
        min_score=body.min_score,
        abstain_label=None,
        model=model,
        file=None,
    )
    layout = Layout.of(options, classifier, None, None, classifier.settings.text_pair_column)
    rows, _ = layout.rows(outputs, body.texts, body.text_pairs, None)
    truncated = classifier.truncated(body.texts, body.text_pairs)
    return [
        {name: row[name] for name in layout.predicted} | ({"truncated": True} if cut else {})
        for row, cut in zip(rows, truncated)
    ]


def describe(config: ServeConfig, classifier, use) -> dict:
    """GET /metadata: what the model is, how it reads texts, and what made it."""
    directory = Path(config.model)
    metrics = _json(directory / "metrics.json")
    manifest = _json(directory / "manifest.json")
    return {
        "model": config.model,
        **use.describe(classifier),
        "max_length": classifier.max_length,
        "device": classifier.device,
        "precision": classifier.precision,
        "base_model": manifest.get("resolved", {}).get("base_model"),
        "lineage": metrics.get("lineage", []),
        "plm_version": __version__,
        "limits": {
            "max_texts_per_request": config.max_texts_per_request,
            "max_batch_size": config.max_batch_size,
            "max_body_bytes": config.max_body_bytes,
            "timeout_seconds": config.timeout,
        },
    }


def describe_sequences(classifier) -> dict:
    """A sentence classifier's or regressor's part of GET /metadata."""
    settings = classifier.settings
    return {
        "task": settings.task,
        "labels": None if classifier.regression else classifier.label_names,
        "thresholds": classifier.thresholds.tolist() if classifier.multi_label else None,
        **(
            classifier.calibrator.describe()
            if settings.calibrated
            else dict.fromkeys(("temperature", "top_score_map"))
        ),
        "text_pair_column": classifier.settings.text_pair_column,
    }


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def serve(config: ServeConfig) -> None:
    """Serve the model of ``config`` until SIGTERM or Ctrl-C; a model that fails to load ends it with its error."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise PlmError(
            f"plm serve needs FastAPI and uvicorn ({exc.name} is missing): pip install 'plm[serve]'."
        ) from None
    from plmcli import modeling

    modeling.resolve(config.model, config.allow_pickle)  # a missing or broken directory is said before serving
    listening = _listen(config.host, config.port)
    port = listening.getsockname()[1]  # the one bound: --port 0 takes a free one
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            Edge(app, config),
            host=config.host,
            port=port,
            http=json_errors_protocol(),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(config.timeout) + 5,
        )
    )
    state: _State = app.state.plm
    state.stop = lambda: setattr(server, "should_exit", True)
    console.info(
        f"Serving {config.model} at http://{_url_host(config.host)}:{port} (POST /predict, GET /health and "
        "/metadata; docs at /docs). Loading the model ..."
    )
    with interrupts.graceful(), listening:  # uvicorn answers what is in flight; the signal then ends plm, exit 0
        server.run(sockets=[listening])
    if state.failure is not None:  # the model did not load: its error line (or a bug's traceback)
        raise state.failure
    console.info("Stopped.")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, made before anything loads; a port another program holds is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(2048)
    except OSError as exc:
        listening.close()
        raise PlmError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host.",
            RUNTIME_FAILURE,
        ) from None
    listening.set_inheritable(True)
    return listening

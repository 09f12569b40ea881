"""`plm serve` under load against `plm predict --file`, on the same model and the 872 SST-2 dev sentences.

- predict: `plm predict --file dev.txt` and a one-text `plm predict`, each a fresh process; its
  marginal texts/s is 872 / (the file's time - the one text's time), the time beyond loading.
- serve: `plm serve` in a subprocess, then 32 concurrent clients (wrk, keep-alive connections)
  each sending one text per request, cycling through the 872 sentences for --seconds: texts/s;
  the same with `--max-batch-size 1` (no gathering); and on the idle server, 50 one-text requests
  one after another: the median latency.

Prints the figures and ratios, and writes bench/out/serve.json.

    python bench/serve_vs_predict.py [--model bench/out/sst2-plm] [--clients 32]
"""

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
DEV = HERE.parent.parent / "shared" / "data" / "sst2" / "dev.tsv"
MODEL = HERE / "out" / "sst2-plm"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def sentences() -> list[str]:
    with open(DEV, newline="", encoding="utf-8") as stream:
        return [row["content"] for row in csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def predict_marginal(model: Path, texts: list[str], scratch: Path) -> dict:
    lines = scratch / "dev.txt"
    lines.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    plm = [sys.executable, "-m", "plmcli", "predict", "--model", str(model), "--device", "cpu"]
    one = min(timed([*plm, texts[0]]) for _ in range(2))
    whole = min(
        timed([*plm, "--file", str(lines), "--output", str(scratch / "out.csv"), "--overwrite"]) for _ in range(2)
    )
    return {
        "one_text_seconds": round(one, 2),
        "file_seconds": round(whole, 2),
        "marginal_texts_per_second": round(len(texts) / (whole - one), 1),
    }


class Server:
    def __init__(self, model: Path, *options: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "plmcli",
            "serve",
            "--model",
            str(model),
            "--port",
            str(self.port),
            "--device",
            "cpu",
            *options,
        ]
        self.process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


WRK_SCRIPT = """
texts = {%s}
i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #texts + 1
  return wrk.format(nil, nil, nil, texts[i])
end
"""


def load(url: str, texts: list[str], clients: int, seconds: int, scratch: Path) -> float:
    """Requests (one text each) answered per second with ``clients`` concurrent connections, cycling the texts.

    The load comes from wrk (C, one connection per client, keep-alive), so that the clients take
    little of the CPU the server runs on.
    """
    bodies = ", ".join(json.dumps(json.dumps({"texts": [text]})) for text in texts)  # Lua strings of JSON bodies
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT % bodies, encoding="utf-8")
    command = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "-s", str(script), f"{url}/predict"]
    report = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    errors = [line for line in report.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        raise SystemExit(f"wrk saw errors: {errors}")
    return float(next(line for line in report.splitlines() if line.startswith("Requests/sec:")).split()[1])


def idle_latency(url: str, texts: list[str], count: int = 50) -> float:
    """The median milliseconds of one-text requests sent one after another."""
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/predict", json={"texts": texts[:1]})
        seconds = []
        for text in texts[:count]:
            started = time.perf_counter()
            client.post("/predict", json={"texts": [text]}).raise_for_status()
            seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20, help="how long each load runs")
    args = parser.parse_args()
    texts = sentences()
    with tempfile.TemporaryDirectory() as scratch:
        predict = predict_marginal(args.model, texts, Path(scratch))
    print(json.dumps({"predict": predict}), flush=True)
    if shutil.which("wrk") is None:
        raise SystemExit("the load comes from wrk: apt-get install wrk")
    served = {}
    for name, options in (("default", ()), ("max_batch_size_1", ("--max-batch-size", "1"))):
        server = Server(args.model, *options)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                rate = load(server.url, texts, args.clients, args.seconds, Path(scratch))
            served[name] = {"texts_per_second": round(rate, 1)}
            if name == "default":
                served[name]["idle_median_ms"] = round(idle_latency(server.url, texts), 1)
        finally:
            server.stop()
        print(json.dumps({name: served[name]}), flush=True)
    result = {
        "texts": len(texts),
        "clients": args.clients,
        "load": "wrk",
        "predict": predict,
        "serve": served,
        "serve_to_predict_marginal": round(
            served["default"]["texts_per_second"] / predict["marginal_texts_per_second"], 2
        ),
        "serve_to_batch_size_1": round(
            served["default"]["texts_per_second"] / served["max_batch_size_1"]["texts_per_second"], 2
        ),
    }
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

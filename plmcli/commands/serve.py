"""`plm serve`: a fine-tuned model as a warm HTTP service.

Usage:
    plm serve --model runs/finetune
    plm serve --model runs/finetune --host 0.0.0.0 --port 8080 --api-key "$KEY"
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"texts": ["a great film"]}'
"""

from typing import Annotated, Optional

import typer

from plmcli.config import ServeConfig, defaults
from plmcli.options import AllowPickleOption, DeviceOption, PrecisionOption

DEFAULT = defaults(ServeConfig)


def serve(
    model: Annotated[
        str, typer.Option("--model", "-m", help="A fine-tuned model directory (or Hugging Face id).")
    ] = DEFAULT.model,
    host: Annotated[
        str, typer.Option(help="The address to listen on; 0.0.0.0 lets other machines connect.")
    ] = DEFAULT.host,
    port: Annotated[int, typer.Option(min=0, max=65535, help="The port to listen on.")] = DEFAULT.port,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Texts of concurrent requests run in one forward pass, at most.")
    ] = DEFAULT.max_batch_size,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a request waits for others to join its batch.")
    ] = DEFAULT.max_wait_ms,
    max_texts_per_request: Annotated[
        int, typer.Option(min=1, help="Texts one request may send.")
    ] = DEFAULT.max_texts_per_request,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="The largest request body accepted.")
    ] = DEFAULT.max_body_bytes,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may wait for its answer.")
    ] = DEFAULT.timeout,
    api_key: Annotated[
        Optional[str],
        typer.Option(envvar="PLM_API_KEY", help="Require 'Authorization: Bearer KEY' (all but /health)."),
    ] = DEFAULT.api_key,
    log_texts: Annotated[
        bool, typer.Option("--log-texts", help="Write each request's texts to the log.")
    ] = DEFAULT.log_texts,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
) -> None:
    """Serve a fine-tuned model over HTTP: POST /predict, GET /health, GET /metadata (docs at /docs)."""
    config = ServeConfig(
        model=model,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_texts_per_request=max_texts_per_request,
        max_body_bytes=max_body_bytes,
        timeout=timeout,
        api_key=api_key,
        log_texts=log_texts,
        device=device.value,
        precision=precision.value,
        allow_pickle=allow_pickle,
    )
    from plmcli.serving import serve as run_serve

    run_serve(config)

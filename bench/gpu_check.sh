#!/usr/bin/env bash
# GPU checks for plm, in one short run on a machine with a CUDA GPU and no network.
#
#   bash bench/gpu_check.sh prepare   # here, with network: wheels, data and the model's shape into .gpu/
#   bash bench/gpu_check.sh run       # there, from the repository root, with .gpu/ beside it; results in $OUT
#   bash bench/gpu_check.sh quick     # the same without the benchmark
#
# The GPU machine has torch but not plm's other dependencies at these versions, nor the bundled
# weights (90 MB, more than may travel): the model there is MiniLM's shape and tokenizer with
# random weights, which is what throughput depends on.
set -euo pipefail
GPU=.gpu
SST2=../shared/data/sst2

prepare() {
    mkdir -p "$GPU/whl" "$GPU/data" "$GPU/minilm"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d "$GPU/whl" \
        transformers==5.24.0 huggingface_hub==2.4.0 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 \
        multiprocess==0.70.19 typer==0.29.2 fsspec==2026.9.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
    model=$(.venv/bin/python -c "from plmcli.modeling import bundled_model_dir; print(bundled_model_dir())")
    cp "$model"/config.json "$model"/tokenizer.json "$model"/tokenizer_config.json "$model"/vocab.txt \
        "$model"/special_tokens_map.json "$GPU/minilm/"
    .venv/bin/python - "$SST2" "$GPU/data" <<'PY'
import csv, sys
from pathlib import Path
source, target = Path(sys.argv[1]), Path(sys.argv[2])
with open(source / "train.tsv", newline="", encoding="utf-8") as stream:
    rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
column = rows[0].index("sentence")
(target / "sentences.txt").write_text("\n".join(r[column].strip() for r in rows[1:20001]) + "\n", encoding="utf-8")
with open(target / "train.tsv", "w", newline="", encoding="utf-8") as stream:
    csv.writer(stream, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\").writerows(rows[:8001])
(target / "dev.tsv").write_bytes((source / "dev.tsv").read_bytes())
PY
    du -sh "$GPU"
}

setup() {
    OUT=${OUT:-/tmp/gpu-out}
    mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU"/whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
    python3 - <<'PY'
import torch, transformers, datasets
print("torch", torch.__version__, "transformers", transformers.__version__, "datasets", datasets.__version__)
print(torch.cuda.get_device_name(), "bf16:", torch.cuda.is_bf16_supported())
from transformers import BertConfig, BertModel
torch.manual_seed(0)
BertModel(BertConfig.from_pretrained(".gpu/minilm")).save_pretrained("/tmp/minilm")
PY
    cp "$GPU"/minilm/* /tmp/minilm/
}

bench() {  # plm against plain Hugging Face, bf16 and fp32
    {
        python3 bench/pretrain_vs_hf.py --device cuda --precision bf16 --model /tmp/minilm \
            --corpus "$GPU/data/sentences.txt" --steps 400 --repeats 2
        python3 bench/pretrain_vs_hf.py --device cuda --precision fp32 --model /tmp/minilm \
            --corpus "$GPU/data/sentences.txt" --steps 200 --repeats 1
    } 2>&1 | grep -v "^Training\|step/s\|s/step" | tee "$OUT/pretrain_bench.txt"
}

cli() {  # the commands end to end on the GPU: pretrain (auto precision), fill-mask, finetune from it, predict
    python3 -m plmcli pretrain "$GPU/data/sentences.txt" --model /tmp/minilm --max-steps 300 --output /tmp/pt 2>&1 \
        | grep -v "step/s\|s/step" | tee "$OUT/pretrain.txt"
    python3 -m plmcli fill-mask --model /tmp/pt "the movie was [MASK] ." 2>&1 | tee "$OUT/fill_mask.txt"
    python3 -m plmcli finetune "$GPU/data/train.tsv" --validation "$GPU/data/dev.tsv" --model /tmp/pt --epochs 1 \
        --output /tmp/ft 2>&1 | grep -v "step/s\|s/step" | tee "$OUT/finetune.txt"
    python3 -m plmcli predict --model /tmp/ft --file "$GPU/data/dev.tsv" --output /tmp/preds.csv 2>&1 \
        | tee "$OUT/predict.txt"
    cp /tmp/pt/metrics.json "$OUT/pretrain_metrics.json"
    cp /tmp/ft/metrics.json "$OUT/finetune_metrics.json"
}

run() { setup; bench; cli; }
quick() { setup; cli; }

"$@"

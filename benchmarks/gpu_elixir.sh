#!/usr/bin/env bash
# Elixir on one CUDA GPU: the benchmark's figures at GPT-2 sizes that need offloading, then the gpu preset
# (throughput vs PyTorch, CUDA peak memory vs budget). Not run in CI; needs a CUDA build of torch.
# Usage: benchmarks/gpu_elixir.sh [python]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script needs a GPU')"
# ~0.35B parameters (d_model 1024, 24 layers): fits plain PyTorch on an 80 GB card, so the ratio is defined
"$PY" benchmarks/bench_elixir.py --device cuda --d-model 1024 --n-layer 24 --n-head 16 --vocab 50257 \
  --batch 8 --seq-len 1024 --steps 5 --repeats 3 --min-chunk-bytes $((32 * 1024 * 1024)) --threads 8
"$PY" -m reprozoo run elixir --preset gpu --device cuda --out "runs/gpu-elixir-$(date +%Y%m%d-%H%M%S)"

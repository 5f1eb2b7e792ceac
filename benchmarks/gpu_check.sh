#!/usr/bin/env bash
# Run every torch method's `smoke` preset on the GPU (`--device cuda`) and print the seconds each took.
#
#   benchmarks/gpu_check.sh                 # all torch methods that have a smoke preset
#   benchmarks/gpu_check.sh ugt rsd4        # only these
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh
#
# The methods come from the registry (a method added later is included without editing this script).
# Exit status: 0 when every method ran, 1 when one failed, 2 when no CUDA GPU is visible to torch.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$here/.venv/bin/python" ]]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False, or torch is missing" >&2
    echo "from $PYTHON); run this on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")'

if [[ $# -gt 0 ]]; then
    methods=("$@")
else
    mapfile -t methods < <("$PYTHON" - <<'EOF'
import sys

from reprozoo.core import registry

for name in registry.names():
    try:
        spec = registry.get(name)
    except Exception as exc:  # e.g. its extra is not installed: say so, check the others
        print(f"gpu_check: {name} skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        continue
    if spec.uses_torch and "smoke" in spec.presets:
        print(name)
EOF
)
fi
if [[ ${#methods[@]} -eq 0 ]]; then
    echo "gpu_check: no torch method with a smoke preset found" >&2
    exit 1
fi

out="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
failed=0
printf '%-14s %10s  %s\n' method seconds "device recorded in result.json"
for name in "${methods[@]}"; do
    t0=$(date +%s.%N)
    if "$PYTHON" -m reprozoo run "$name" --preset smoke --device cuda --quiet --out "$out/$name" \
            >"$out/$name.log" 2>&1; then
        t1=$(date +%s.%N)
        device=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["environment"]["device"])' \
                 "$out/$name/result.json" 2>/dev/null || echo "?")
        printf '%-14s %10.1f  %s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$device"
    else
        t1=$(date +%s.%N)
        printf '%-14s %10.1f  FAILED (log: %s)\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$out/$name.log"
        tail -n 5 "$out/$name.log" | sed 's/^/    /'
        failed=1
    fi
done
echo "gpu_check: run folders and logs in $out"
exit $failed

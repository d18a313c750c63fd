"""The Hydra configs of train.py, evaluate.py, mine.py, pretrain.py and reproduce.py, shipped with the package and
found as `pkg://mof.conf` (so that an installed mof runs them from any folder)."""

"""A Hydra sweeper driven by Optuna (`hydra/sweeper=mof_optuna`); see `optuna_sweeper.py`."""

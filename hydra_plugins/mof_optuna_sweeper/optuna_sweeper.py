"""`hydra/sweeper=mof_optuna`: an Optuna study (TPE) over Hydra's sweep syntax, stored in SQLite so that it resumes.

    python train.py -m hparams_search=amof_alpha                  # the study of mof/conf/hparams_search/amof_alpha.yaml
    python train.py -m hparams_search=amof_alpha hydra.sweeper.n_trials=40   # the same study, 40 trials in all

Search space (`hydra.sweeper.params`, or sweep overrides on the command line): `interval(a, b)` a float,
`range(a, b[, step])` an int (or stepped float), `choice(x, y, ...)` a category, `tag(log, interval(a, b))` on a log
scale. Each trial is one job of Hydra's launcher; the job's return value (`optimized_metric`) is the trial's value.
A job that fails, or returns None or a non-finite value (mof's training returns NaN for a failed job), is recorded
as a failed trial and the study goes on. Re-running the same command continues the study in `storage` up to
`n_trials` finished trials; job folders are numbered by trial.

Written for mof instead of hydra-optuna-sweeper 1.3, which pins optuna<3 and stops the whole sweep at a NaN.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from mof.errors import MofError, exit_with

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


class StudyMismatchError(MofError, ValueError):
    """The study stored under this name optimises in the other direction, or its storage cannot be read."""


def open_study(name: str, storage: str | None, direction: str, seed: int = 0) -> optuna.Study:
    """The study `name` in `storage`, created if new. Optuna loads a stored study whatever `direction` says, so a
    study stored as "minimize" would be continued as one, its best trial the worst: refused instead."""
    from sqlalchemy.exc import SQLAlchemyError  # optuna's storage layer

    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                    sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    except SQLAlchemyError as e:
        raise StudyMismatchError(f"hydra.sweeper.storage: {storage} is not a readable Optuna database "
                                 f"({type(e).__name__}); move it away to start a new study, or name another storage") from None
    stored = study.direction.name.lower()
    if stored != direction:
        raise StudyMismatchError(f"hydra.sweeper.direction: {direction!r}, but the study {name!r} in {storage} was "
                                 f"created to {stored}; use another hydra.sweeper.study_name or storage")
    return study


def distribution(key: str, sweep) -> optuna.distributions.BaseDistribution:
    log_scale = "log" in sweep.tags
    if isinstance(sweep, IntervalSweep):
        return optuna.distributions.FloatDistribution(sweep.start, sweep.end, log=log_scale)
    if isinstance(sweep, RangeSweep):
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return optuna.distributions.IntDistribution(sweep.start, sweep.stop - 1, step=sweep.step, log=log_scale)
        return optuna.distributions.FloatDistribution(sweep.start, sweep.stop, step=sweep.step)
    if isinstance(sweep, ChoiceSweep):
        return optuna.distributions.CategoricalDistribution(sweep.list)
    raise ValueError(f"hydra.sweeper.params.{key}: expected interval(...), range(...) or choice(...), got {sweep}")


class MofOptunaSweeper(Sweeper):
    def __init__(self, n_trials: int = 20, n_jobs: int = 1, direction: str = "maximize", storage: str | None = None,
                 study_name: str = "mof", seed: int = 0, params: dict | None = None):
        self.n_trials, self.n_jobs, self.direction = n_trials, n_jobs, direction
        self.storage, self.study_name, self.seed = storage, study_name, seed
        self.params = dict(params or {})

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def space(self, arguments: list[str]) -> tuple[dict, list[str]]:
        """The search space (`params` and sweep overrides) and the fixed overrides of every trial."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        space, fixed = {}, []
        for o in overrides:
            key = o.get_key_element()
            if o.is_sweep_override():
                space[key] = distribution(key, o.value())
            else:
                fixed.append(f"{key}={o.get_value_element_as_str()}")
        return space, fixed

    def sweep(self, arguments: list[str]) -> Any:
        space, fixed = self.space(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            study = open_study(self.study_name, self.storage, self.direction, self.seed)
        except MofError as e:
            exit_with(e)  # one line, exit status 2, as every mof command
        done = sum(t.state in FINISHED for t in study.trials)
        log.info("study %r in %s: %d of %d trials finished", self.study_name, self.storage, done, self.n_trials)
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [fixed + [f"{k}={v}" for k, v in t.params.items()] for t in trials]
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, result in zip(trials, results):
                value = self._value(trial, result)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
            done += len(trials)
        self._write_best(study, sweep_dir)
        return study

    @staticmethod
    def _value(trial, result) -> float | None:
        try:
            value = result.return_value  # raises the job's exception if it failed
        except Exception as e:  # noqa: BLE001 - a failed job is a failed trial, never the end of the study
            log.warning("trial %d failed: %s", trial.number, e)
            return None
        if value is None or not math.isfinite(float(value)):
            log.warning("trial %d returned %r: recorded as failed", trial.number, value)
            return None
        return float(value)

    def _write_best(self, study, sweep_dir: Path) -> None:
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        summary = {"name": self.study_name, "storage": self.storage, "direction": self.direction,
                   "trials": {s.name.lower(): sum(t.state == s for t in study.trials) for s in FINISHED}}
        if complete:
            summary.update(best_value=study.best_value, best_params=study.best_params, best_trial=study.best_trial.number)
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
        log.info("optimization results: %s", summary)

"""mof's command lines: one Hydra app per tool, its config found as `pkg://mof.conf`, so that they run from any
folder once mof is installed. The scripts beside the checkout (`python train.py ...`) and the console scripts
(`mof-train ...`, pyproject.toml) both call these.

Each app names its Hydra job (`hydra.job.name`, the `<job>.log` file) after its tool, not after this module.
"""

from __future__ import annotations

import hydra


def _app(config_name: str, body_path: str, one_line: bool = True):
    """A Hydra app over `mof.conf/<config_name>.yaml` that runs `body_path` ("module:function") on the config."""

    @hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name=config_name)
    def main(cfg):
        import importlib

        from .console import setup_console
        from .errors import one_line_errors

        setup_console()
        module, name = body_path.split(":")
        body = getattr(importlib.import_module(module), name)
        return one_line_errors(body)(cfg) if one_line else body(cfg)  # bad input: one line on stderr, exit 2

    main.__name__ = config_name
    return main


# train's own body reports failed sweep jobs and exits 2 or 3 itself (mof.training.run.run)
train = _app("train", "mof.training.run:run", one_line=False)
evaluate = _app("evaluate", "mof.evaluation.entry:main", one_line=False)
mine = _app("mine", "mof.mining.run:mine")
pretrain = _app("pretrain", "mof.pretraining.run:pretrain")
reproduce = _app("reproduce", "mof.study.run:reproduce")

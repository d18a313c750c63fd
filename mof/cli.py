"""mof's command lines: one Hydra app per tool, its config found as `pkg://mof.conf`, so that they run from any
folder once mof is installed. The scripts beside the checkout (`python train.py ...`) and the console scripts
(`mof-train ...`, pyproject.toml) both call these.

Each app names its Hydra job (`hydra.job.name`, the `<job>.log` file) after its tool, not after this module.
"""

from __future__ import annotations

import difflib
import re
import sys

import hydra

from .conf import options


def config_hint(config_name: str, args: list[str]) -> str | None:
    """What a command line that Hydra could not compose most likely meant: the nearest key of the node a misspelt
    key was meant for, or the nearest option of a config group (Hydra's own hint, `+key`, adds a new key)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        with initialize_config_module(config_module="mof.conf", version_base="1.3"):
            compose(config_name, overrides=overrides)
            return None
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors come in several classes
        text = f"{e} {e.__cause__ or ''}"
    if m := re.search(r"Could not find '([\w/]+)/([^']+)'", text):
        group, option = m.groups()
        known = options(group)
        near = difflib.get_close_matches(option, known, n=1, cutoff=0.5)
        return f"{group}={option}: no such option" + (f"; did you mean {group}={near[0]}?" if near else "") + \
            (f" (options: {', '.join(known)})" if known else "")
    if m := re.search(r"Could not override '([^']+)'", text):
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        rest = [a for a in overrides if not a.split("=", 1)[0].lstrip("+~") == key]
        try:
            with initialize_config_module(config_module="mof.conf", version_base="1.3"):
                node = OmegaConf.select(compose(config_name, overrides=rest), parent) if parent else compose(config_name, overrides=rest)
        except Exception:  # noqa: BLE001 - another override is wrong too: Hydra's message stands
            return None
        known = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
        near = difflib.get_close_matches(leaf, known, n=1, cutoff=0.5)
        where = parent or "the config"
        return (f"{key}: {where} has no key {leaf!r}" + (f"; did you mean {parent + '.' if parent else ''}{near[0]}?"
                                                          if near else f" (its keys: {', '.join(known)})")
                + f" (+{key}=... would add a new key, which nothing reads)")
    return None


def _app(config_name: str, body_path: str, one_line: bool = True):
    """A Hydra app over `mof.conf/<config_name>.yaml` that runs `body_path` ("module:function") on the config.
    A command line Hydra cannot compose gets a "did you mean" line after Hydra's message, and exit status 2."""
    started = []

    @hydra.main(version_base="1.3", config_path="pkg://mof.conf", config_name=config_name)
    def main(cfg):
        import importlib

        from .console import setup_console
        from .errors import one_line_errors

        started.append(True)
        setup_console()
        module, name = body_path.split(":")
        body = getattr(importlib.import_module(module), name)
        return one_line_errors(body)(cfg) if one_line else body(cfg)  # bad input: one line on stderr, exit 2

    def run():
        try:
            return main()
        except SystemExit as e:
            if e.code == 1 and not started:   # Hydra could not compose the command line
                hint = config_hint(config_name, sys.argv[1:])
                if hint:
                    print(f"error: {hint}", file=sys.stderr)
                raise SystemExit(2) from None
            raise

    run.__name__ = config_name
    return run


# train's own body reports failed sweep jobs and exits 2 or 3 itself (mof.training.run.run)
train = _app("train", "mof.training.run:run", one_line=False)
evaluate = _app("evaluate", "mof.evaluation.entry:main", one_line=False)
mine = _app("mine", "mof.mining.run:mine")
pretrain = _app("pretrain", "mof.pretraining.run:pretrain")
reproduce = _app("reproduce", "mof.study.run:reproduce")

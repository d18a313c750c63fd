"""The Hydra configs of train.py, evaluate.py, mine.py, pretrain.py and reproduce.py, shipped with the package and
found as `pkg://mof.conf` (so that an installed mof runs them from any folder)."""

from importlib import resources


def options(group: str) -> list[str]:
    """The options of a config group (`data` -> default, llava_instruct, ..., synthetic, synthetic_rare), sorted."""
    folder = resources.files(__name__).joinpath(group)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []

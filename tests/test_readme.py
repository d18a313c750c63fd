"""The README's commands, as printed: every Hydra command in its shell blocks composes (a misspelt key, group or option
fails here), and the ones that need neither a GPU nor downloaded data run (shrunk by overrides, named below)."""

import re
import shlex

import pytest

from helpers import FAST, ROOT, compose_cfg, run_script

TOOLS = {"train.py": "train", "evaluate.py": "evaluate", "mine.py": "mine", "pretrain.py": "pretrain",
         "reproduce.py": "reproduce", "-m mof.estimate": "train", "-m mof.training.data_report": "train"}


def readme_commands() -> list[str]:
    """Each command line of the README's ```bash blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.extend(part.strip() for part in line.split("&&"))
    return lines


def hydra_commands() -> list[tuple[str, list[str]]]:
    """`(config name, overrides)` of each `python <tool> ...` command; a sweep (`-m a=x,y`) as its first job."""
    out = []
    for line in readme_commands():
        match = re.search(r"python (train\.py|evaluate\.py|mine\.py|pretrain\.py|reproduce\.py|-m mof\.estimate|"
                          r"-m mof\.training\.data_report)(.*)$", line)
        if not match:
            continue
        args = [a for a in shlex.split(match.group(2)) if a not in ("-m", "--cfg", "job", "...")]
        args = [re.sub(r"^([\w.@/]+)=([^\[\]]*?),.*$", r"\1=\2", a) for a in args]  # a=x,y -> a=x (not lists)
        out.append((TOOLS[match.group(1)], args))
    return out


def test_the_readme_has_the_commands_this_test_reads():
    tools = {name for name, _ in hydra_commands()}
    assert {"train", "evaluate", "mine", "pretrain", "reproduce"} <= tools and len(hydra_commands()) >= 30


@pytest.mark.parametrize("config,overrides", hydra_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_readme_hydra_command_composes(tmp_path, config, overrides):
    cfg = compose_cfg(config, tmp_path / "run", tmp_path / "data", [o for o in overrides if not o.startswith("hydra.")])
    assert cfg is not None


# The README's commands that need no GPU and no downloaded data, run for real (shrunk to seconds where noted).
RUNNABLE = [
    ["train.py", "debug=fast_dev_run"],
    ["train.py", "mof=sva", "mof.grid=4", "trainer.max_steps=1", "export=false", "evaluate_after=null"],  # shrunk
    ["-m", "mof.estimate", "model=llava15_7b", "mof=interleaved", "stage=finetune", "strategy=deepspeed_zero3",
     "trainer.devices=8"],
]


@pytest.mark.parametrize("args", RUNNABLE, ids=lambda a: " ".join(a[:3]))
def test_readme_commands_that_need_nothing_run(tmp_path, data_dir, args):
    assert any(" ".join(a for a in args if "max_steps" not in a and "export" not in a and "evaluate_after" not in a)
               in line for line in readme_commands()), args  # still in the README as printed
    extra = [*FAST, f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}"] if args[0] == "train.py" else []
    proc = run_script([*args, *extra])
    assert "Traceback" not in proc.stderr

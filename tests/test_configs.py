"""Every shipped config composes and instantiates: model (on the meta device), data module, strategy, logger."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import CONF, compose_cfg, run_script, train_cfg
from mof import MofForConditionalGeneration
from mof.training.config_check import validate
from mof.training.from_config import model_config_from, stage_plan
from mof.training.run import train
from mof.training.strategies import build_strategy

GROUPS = ["model", "mof", "data", "stage", "strategy", "logger", "trainer", "debug", "experiment"]
CASES = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONF) / g).glob("*.yaml"))]


def fake_datasets(cfg, root: Path) -> None:
    """Empty dataset files where a non-synthetic config expects them (the check only needs them to exist)."""
    for src in cfg.data.sources or []:
        Path(src.path).parent.mkdir(parents=True, exist_ok=True)
        Path(src.path).write_text("[]")


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_shipped_config_composes_and_instantiates(tmp_path, group, option):
    cfg = compose_cfg("train", tmp_path / "run", tmp_path / "data", [f"{group}={option}", "logger=none"] if group != "logger"
                      else [f"{group}={option}"])
    config = model_config_from(cfg)
    with torch.device("meta"):
        model = MofForConditionalGeneration(config)
    assert sum(p.numel() for p in model.fusion.parameters()) > 0
    stage_plan(cfg)
    fake_datasets(cfg, tmp_path / "data")
    if cfg.model.load_pretrained:  # no weights here: the values are checked without them
        cfg.model.load_pretrained = False
    validate(cfg)
    datamodule = instantiate(cfg.data)
    assert datamodule.sources and datamodule.template_name == cfg.stage.template
    strategy, name = build_strategy(cfg.strategy.name, "cpu"), cfg.strategy.name
    if name == "auto":
        assert strategy == "auto"
    elif name == "ddp":   # gloo: CPU processes
        assert type(strategy).__name__ == "DDPStrategy" and strategy._process_group_backend == "gloo"
    elif name == "fsdp2":   # one consolidated checkpoint file (the restricted reader's), gloo
        assert type(strategy).__name__ == "FSDP2Strategy" and strategy._process_group_backend == "gloo"
        assert strategy._save_distributed_checkpoint is False and strategy._tensor_parallel_size == 1
    else:                 # the ZeRO stage and offload the name says
        zero = strategy.config["zero_optimization"]
        assert zero["stage"] == (2 if name == "deepspeed_zero2" else 3)
        assert ("offload_optimizer" in zero) == ("offload_param" in zero) == name.endswith("offload")
    if cfg.get("logger"):
        assert type(instantiate(cfg.logger)).__name__ == cfg.logger._target_.rsplit(".", 1)[1]


def test_options_state_only_what_differs():
    base = OmegaConf.load(Path(CONF) / "model" / "llava15_7b.yaml")
    big = OmegaConf.load(Path(CONF) / "model" / "llava15_13b.yaml")
    assert big.defaults[0] == "llava15_7b" and len(OmegaConf.to_container(big)) <= 3
    for name in ("pretrain", "lora"):
        assert OmegaConf.load(Path(CONF) / "stage" / f"{name}.yaml").defaults[0] == "finetune"
    assert OmegaConf.to_container(base)["config"]["fusion"] == "${mof}"


def test_model_and_stage_groups_do_not_write_into_other_groups():
    for group in ("model", "stage", "mof", "data"):
        for path in (Path(CONF) / group).glob("*.yaml"):
            assert "@package _global_" not in path.read_text(), path


def test_13b_preset_differs_from_7b_in_the_llm_only(tmp_path):
    small = compose_cfg("train", tmp_path / "a", tmp_path, ["model=llava15_7b"])
    big = compose_cfg("train", tmp_path / "b", tmp_path, ["model=llava15_13b"])
    a, b = (OmegaConf.to_container(c.model, resolve=True) for c in (small, big))
    assert a.pop("tokenizer") == "lmsys/vicuna-7b-v1.5" and b.pop("tokenizer") == "lmsys/vicuna-13b-v1.5"
    assert a["config"].pop("llm") == "lmsys/vicuna-7b-v1.5" and b["config"].pop("llm") == "lmsys/vicuna-13b-v1.5"
    assert a == b
    assert model_config_from(big).text_config.hidden_size == 5120


def test_stage_learning_rates_come_from_the_model_preset_or_the_stage(tmp_path):
    lr = {}
    for model in ("tiny", "llava15_7b"):
        for stage in ("pretrain", "finetune", "lora"):
            cfg = compose_cfg("train", tmp_path, tmp_path, [f"model={model}", f"stage={stage}"])
            lr[model, stage] = (cfg.stage.optimizer.lr, cfg.stage.optimizer.projector_lr)
    assert {v for k, v in lr.items() if k[0] == "tiny"} == {(1e-3, None), (1e-3, 1e-3)}
    assert lr["llava15_7b", "pretrain"] == (1e-3, None) and lr["llava15_7b", "finetune"] == (2e-5, None)
    assert lr["llava15_7b", "lora"] == (2e-4, 2e-5)


def test_synthetic_data_follows_the_stage_template(tmp_path):
    names = {}
    for stage in ("pretrain", "finetune"):
        cfg = compose_cfg("train", tmp_path, tmp_path, [f"stage={stage}"])
        names[stage] = [Path(s.path).name for s in instantiate(cfg.data).sources]
    assert names == {"pretrain": ["captions.json"], "finetune": ["instruct.json", "captions.json"]}


def test_rarer_question_data_keeps_the_same_properties_rarer_in_a_folder_of_its_own(tmp_path):
    """`data=synthetic_rarer`: `synthetic_rare`'s five properties (those the tiny CLIP's captions never name) at
    0.03 instead of 0.1, in its own folder, so that the two sets never replace each other."""
    got = {}
    for option in ("synthetic_rare", "synthetic_rarer"):
        cfg = compose_cfg("train", tmp_path / "run", tmp_path / "data", [f"data={option}"])
        got[option] = (OmegaConf.to_container(cfg.data.synthetic.question_share), Path(cfg.data.synthetic.out).name)
    five = ("orientation", "presence", "quantity", "position", "viewpoint")
    assert got == {"synthetic_rare": (dict.fromkeys(five, 0.1), "train_rare"),
                   "synthetic_rarer": (dict.fromkeys(five, 0.03), "train_rarer")}


def test_debug_fast_dev_run_trains_one_batch(tmp_path, data_dir):
    cfg = train_cfg(tmp_path, data_dir, ["debug=fast_dev_run"])
    assert cfg.trainer.fast_dev_run is True and cfg.evaluate_after is None and cfg.logger is None
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert not (tmp_path / "export").exists()


def test_experiments_and_debug_override_the_root_config(tmp_path):
    cfg = compose_cfg("train", tmp_path, tmp_path, ["experiment=llava15_imof_stage1"])
    assert cfg.task_name == "llava15_imof_stage1" and cfg.evaluate_after is None
    cfg = compose_cfg("train", tmp_path, tmp_path, ["debug=overfit"])
    assert cfg.export is False and cfg.trainer.overfit_batches == 2


MODELS = sorted(p.stem for p in (Path(CONF) / "model").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (Path(CONF) / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_searches_and_benchmarks_compose_with_every_model_preset(tmp_path, model):
    """Every Optuna search sweeps keys that every preset has; every benchmark evaluate_after takes is configured
    from conf/benchmark/ whatever the preset."""
    from mof.evaluation.benchmarks import BENCHMARKS
    from mof.training.run import benchmark_section

    for search in SEARCHES:
        cfg = compose_cfg("train", tmp_path, tmp_path, [f"model={model}", f"hparams_search={search}"])
        for key in cfg.hydra.sweeper.params:
            assert OmegaConf.select(cfg, key, default="missing") != "missing", (search, key)
    after = [n for n, b in BENCHMARKS.items() if not hasattr(b, "evaluate_model")]
    cfg = compose_cfg("train", tmp_path, tmp_path, [f"model={model}", f"evaluate_after=[{','.join(after)}]"])
    if cfg.model.load_pretrained:
        cfg.model.load_pretrained = False
    validate(cfg)
    sections = {name: benchmark_section(cfg, name) for name in after}
    for name, section in sections.items():  # the same settings as evaluate.py's benchmark=<name>
        alone = compose_cfg("evaluate", tmp_path, tmp_path, [f"benchmark={name}", "checkpoint=x"])
        expected = OmegaConf.to_container(alone.benchmark, resolve=True)
        assert {k: v for k, v in section.items() if k != "synthetic"} == {k: v for k, v in expected.items() if k != "synthetic"}
        assert BENCHMARKS[name](section, tmp_path).section["name"] == name
    assert benchmark_section(cfg, "mmvp")["root"] == f"{tmp_path}/MMVP"  # ${paths.data_dir} resolved
    assert benchmark_section(cfg, "synthetic")["synthetic"]["pairs_per_pattern"] == cfg.synthetic_benchmark.pairs_per_pattern


def test_a_benchmark_built_without_hydra_has_evaluate_pys_settings(tmp_path):
    """Defaults are stated once, in mof/conf/benchmark/: `MMVP({})` (a notebook, the lmms-eval plugin, a test) gets
    what `evaluate.py benchmark=mmvp` composes, `${paths.data_dir}` included, and code states none of them."""
    from mof.evaluation.benchmarks import BENCHMARKS

    for name, benchmark in BENCHMARKS.items():
        composed = compose_cfg("evaluate", tmp_path, tmp_path, [f"benchmark={name}", "checkpoint=x"])
        expected = OmegaConf.to_container(composed.benchmark, resolve=True)
        built = benchmark({}, tmp_path).section
        if name == "synthetic_pope":   # its generated folder, filled in when no root is given
            assert built.pop("root") == built.pop("image_root").parent
            expected.pop("root"), expected.pop("image_root")
        assert built == expected, name
    composed = compose_cfg("evaluate", tmp_path, tmp_path, ["benchmark=pope", "checkpoint=x", "benchmark.batch_size=3"])
    assert BENCHMARKS["pope"]({"batch_size": 3}, tmp_path).section == OmegaConf.to_container(composed.benchmark, resolve=True)


@pytest.mark.parametrize("args,hint", [
    (["train.py", "trainer.max_step=3"], "error: trainer.max_step: trainer has no key 'max_step'; did you mean trainer.max_steps?"),
    (["train.py", "mof=interleavd"], "error: mof=interleavd: no such option; did you mean mof=interleaved?"),
    (["evaluate.py", "benchmark.scorng=paper"], "did you mean benchmark.scoring?"),
])
def test_misspelt_keys_and_options_get_did_you_mean_and_exit_2(tmp_path, args, hint):
    """Before: Hydra's hint, "To append to your config use +trainer.max_step=3", adds a key nothing reads."""
    proc = run_script([*args, f"hydra.run.dir={tmp_path}"], check=False)
    assert proc.returncode == 2 and hint in proc.stderr

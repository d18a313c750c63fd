"""`train(cfg)`: one training run from a composed Hydra config. Returns its metrics."""

from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..checkpoints.export import save_export
from ..checkpoints.files import AtomicCheckpointIO
from ..checkpoints.resume import resolve_resume
from ..data import load_tokenizer
from ..model.stages import log_parameter_report
from ..evaluation.benchmarks import get_benchmark
from ..evaluation.loading import load_for_evaluation
from ..evaluation.run import evaluate_benchmark
from ..errors import ConfigError, MofError, exit_with, refuse_finished
from .callbacks import GracefulStop, GradNormMonitor, KeptCheckpoints, SkippedSamples, StopAndSave, ThroughputMonitor, ZeroPartitionReport
from .config_check import validate
from .deepspeed_strategy import gathered_params
from .from_config import build_model_from_cfg, model_config_from, run_info
from .module import MofLitModule
from .strategies import build_strategy

log = logging.getLogger(__name__)


class TrainingFailed(MofError, RuntimeError):
    """The run trained on (almost) nothing: no export is written."""


def _precision(cfg, accelerator: str) -> str:
    if cfg.trainer.precision is not None:
        return str(cfg.trainer.precision)
    return "bf16-mixed" if accelerator in ("gpu", "cuda") else "32-true"


def _accelerator(cfg) -> str:
    acc = cfg.trainer.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return acc


def _multirun():
    """The HydraConfig of a multirun job, or None."""
    hc = HydraConfig.get() if HydraConfig.initialized() else None
    return hc if hc is not None and hc.mode is not None and hc.mode.name == "MULTIRUN" else None


def _logger(cfg, run_dir: Path):
    if not cfg.get("logger"):
        return False
    kwargs = {}
    sweep = _multirun()
    if "WandbLogger" in cfg.logger.get("_target_", "") and sweep is not None:
        kwargs["name"] = f"{cfg.task_name}-{sweep.job.num}"
        if cfg.logger.get("group") is None:
            kwargs["group"] = Path(sweep.sweep.dir).name  # the jobs of one sweep, grouped
    return instantiate(cfg.logger, **kwargs)


def train(cfg: DictConfig) -> dict:
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:  # the same command twice must not replace a finished (or stopped) run
        refuse_finished(run_dir, ["export", "checkpoints", *sorted(p.name for p in run_dir.glob("eval_*"))],
                        bool(cfg.get("overwrite")), "continue it with resume=auto")
    accelerator = _accelerator(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    # Everything that can be checked without weights comes first.
    model_config = model_config_from(cfg)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    vocab = model_config.text_config.vocab_size
    if len(tokenizer) > vocab and not model_config.text_pretrained:
        raise ConfigError(f"model.config.vocab_size: {vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    datamodule = instantiate(cfg.data).bind(model_config, tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    log.info("data: %d samples, %s skipped while reading", len(datamodule.dataset), dict(datamodule.dataset.read_skipped))

    model = build_model_from_cfg(cfg, model_config)
    module = MofLitModule(model, OmegaConf.to_container(cfg.stage.optimizer, resolve=True),
                          OmegaConf.to_container(cfg.stage.scheduler, resolve=True),
                          run_info(cfg, model_config, datamodule.image_processor))

    ckpt_dir = run_dir / "checkpoints"
    ck = cfg.checkpoint
    # last.ckpt is replaced, never joined by a last-v1.ckpt that resume=auto misses (no version counter)
    checkpoints = [pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, enable_version_counter=False,
                                                every_n_train_steps=ck.every_n_train_steps)]
    if ck.get("keep_every_n_train_steps"):
        checkpoints.append(KeptCheckpoints(ckpt_dir, ck.keep_every_n_train_steps))
    read_skipped = datamodule.dataset.read_skipped
    skipped = SkippedSamples(read_skipped, len(datamodule.dataset) + sum(read_skipped.values()))
    stop_at_step = int(cfg.stop_at_step) if cfg.get("stop_at_step") else None
    callbacks = [*checkpoints, ThroughputMonitor(), GradNormMonitor(), skipped, StopAndSave(ckpt_dir / "last.ckpt", stop_at_step)]
    if cfg.strategy.name.startswith("deepspeed"):
        callbacks.append(ZeroPartitionReport(run_dir))
    logger = _logger(cfg, run_dir)
    if logger:
        callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="step"))
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg.pop("precision")
    tcfg["accelerator"] = accelerator
    if tcfg.get("limit_train_batches") is None:
        tcfg.pop("limit_train_batches", None)
    strategy = build_strategy(cfg.strategy.name, accelerator, tcfg, run_dir)
    trainer = pl.Trainer(
        **tcfg, precision=_precision(cfg, accelerator), strategy=strategy, logger=logger, callbacks=callbacks,
        default_root_dir=str(run_dir), use_distributed_sampler=False, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()] if not cfg.strategy.name.startswith("deepspeed") else None)
    if trainer.is_global_zero:
        (run_dir / "parameters.txt").write_text(log_parameter_report(model) + "\n")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(cfg.resume, run_dir), weights_only=True)
    except GracefulStop as stop:
        if stop.reason != "stop_at_step":
            raise  # preempted: the checkpoint is written, the exit status says the run is not finished
        log.info("%s", stop)
        return _metrics(trainer, skipped)  # a chunk of a run: no export yet

    metrics = _metrics(trainer, skipped)
    bound = float(cfg.data.get("max_skipped_fraction", 0.01))
    if module.trained_batches == 0:
        raise TrainingFailed(f"training took no optimizer step: every batch was skipped ({dict(skipped.counts)}); "
                             "no export written")
    if skipped.fraction > bound:
        raise TrainingFailed(
            f"{skipped.fraction:.1%} of the samples were skipped during training (limit data.max_skipped_fraction="
            f"{bound}): {dict(skipped.counts)}; no export written. Fix the data, or raise the limit knowingly.")
    if cfg.export or evaluate_after(cfg):
        export_dir = export_after_training(trainer, module, tokenizer, datamodule.image_processor, run_dir / "export")
        if trainer.is_global_zero:
            names = evaluate_after(cfg)
            loaded = load_for_evaluation(export_dir, next(module.model.parameters()).device) if names else None
            for name in names:
                benchmark = get_benchmark(name)(benchmark_section(cfg, name), cfg.paths.data_dir)
                results = evaluate_benchmark(benchmark, export_dir, run_dir / f"eval_{name}",
                                             template=cfg.stage.template, loaded=loaded)
                scores = {f"eval/{name}/{m}": results[m] for m in results["metric_names"]}
                metrics.update(scores)
                if logger:
                    logger.log_metrics(scores)
    if logger and hasattr(logger, "experiment") and "Wandb" in type(logger).__name__:
        import wandb

        wandb.finish()
    return metrics


def evaluate_after(cfg) -> list[str]:
    """The benchmarks to score after training: `evaluate_after` as a name or a list of names (null: none)."""
    value = cfg.get("evaluate_after")
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def benchmark_section(cfg, name: str) -> dict:
    """A benchmark's settings after training: `benchmarks.<name>` of the run's config; the synthetic ones are drawn
    like the run's synthetic data (seed, size), `synthetic_benchmark.pairs_per_pattern` pairs of each pattern."""
    node = (cfg.get("benchmarks") or {}).get(name)
    section = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    if name in ("synthetic", "synthetic_pope"):
        synthetic = cfg.data.get("synthetic") or {}
        section.setdefault("synthetic", {"seed": synthetic.get("seed"), "size": synthetic.get("size"),
                                         "shuffle_options": synthetic.get("shuffle_options"),
                                         "pairs_per_pattern": cfg.synthetic_benchmark.pairs_per_pattern})
    return section


def export_after_training(trainer, module, tokenizer, image_processor, out: Path) -> Path:
    """The run's final model, gathered from all ranks under ZeRO-3, written by rank 0 to `<run dir>/export`."""
    model = module.model
    with gathered_params(trainer, model):
        if trainer.is_global_zero:
            stage = module.run_info.get("stage", {})
            save_export(model, tokenizer, image_processor, out, {"global_step": trainer.global_step,
                                                                 "stage": stage.get("name"), "template": stage.get("template")},
                        overwrite=True)
    trainer.strategy.barrier("mof-export")
    return out


def _metrics(trainer, skipped: SkippedSamples) -> dict:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics.update({f"data/skipped/{k}": float(v) for k, v in skipped.counts.items()})
    metrics["data/skipped_total"] = float(sum(skipped.counts.values()))
    metrics["data/trained_samples"] = float(skipped.trained)
    return metrics


def run(cfg: DictConfig):
    """The Hydra entry point's body: in a multirun, a failed job is recorded and the sweep goes on; otherwise an
    error about the user's input is one line on stderr and exit status 2 (3 for a preempted run)."""
    multirun = _multirun() is not None
    try:
        metrics = train(cfg)
    except Exception as e:
        if not multirun:
            if isinstance(e, MofError):
                exit_with(e, 3 if isinstance(e, GracefulStop) else 2)
            raise
        log.error("job failed: %s", e)
        (Path(cfg.paths.output_dir) / "error.txt").write_text(traceback.format_exc())
        return math.nan
    value = metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    return value

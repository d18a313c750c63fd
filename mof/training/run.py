"""`train(cfg)`: one training run from a composed Hydra config. Returns its metrics."""

from __future__ import annotations

import logging
import math
import traceback
import uuid
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..checkpoints.export import export_checkpoint, save_export
from ..checkpoints.files import AtomicCheckpointIO
from ..checkpoints.resume import resolve_resume
from ..data import load_tokenizer
from ..model.stages import log_parameter_report
from ..evaluation.benchmarks import get_benchmark
from ..evaluation.loading import load_for_evaluation
from ..evaluation.run import evaluate_benchmark
from ..errors import ConfigError, MofError, exit_with, is_secondary_rank, refuse_finished
from ..threads import pinned_threads
from .callbacks import (GracefulStop, GradNormMonitor, KeptCheckpoints, LastCheckpoint, PaddingFraction, SamplerEpoch,
                        SkippedSamples, StepProgressBar, StopAndSave, PartitionReport, throughput_monitor)
from .config_check import validate
from .from_config import build_model_from_cfg, model_config_from, run_info
from .module import MofLitModule
from .strategies import build_strategy, gathered_params, is_fsdp2

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


WANDB_ID = "wandb_run_id"  # in the run directory: a resumed run logs into the same wandb run


def _logger(cfg, run_dir: Path):
    if not cfg.get("logger"):
        return False
    kwargs = {}
    if "WandbLogger" in cfg.logger.get("_target_", ""):  # one tracker run per run, resumes included
        id_file = run_dir / WANDB_ID
        if not id_file.is_file() and not is_secondary_rank():  # rank 0 names the run; only it logs to wandb
            id_file.write_text(uuid.uuid4().hex[:12])
        kwargs.update(id=id_file.read_text().strip() if id_file.is_file() else None, resume="allow")
    sweep = _multirun()
    if "WandbLogger" in cfg.logger.get("_target_", "") and sweep is not None:
        kwargs["name"] = f"{cfg.task_name}-{sweep.job.num}"
        if cfg.logger.get("group") is None:
            kwargs["group"] = Path(sweep.sweep.dir).name  # the jobs of one sweep, grouped
    return instantiate(cfg.logger, **kwargs)


def train(cfg: DictConfig) -> dict:
    """One run: checked, prepared, fitted, checked again, exported and evaluated, on the model's pinned thread count
    (`model.threads`: the same sums on any core count). Returns its metrics."""
    validate(cfg)
    with pinned_threads(cfg.model.get("threads")):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    run_dir = claim_run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    model_config, tokenizer, datamodule = prepare_data(cfg)  # everything that can be checked without weights
    model = build_model_from_cfg(cfg, model_config)
    module = MofLitModule(model, {**OmegaConf.to_container(cfg.stage.optimizer, resolve=True),
                                  "fused": bool(cfg.speed.fused_adamw)},
                          OmegaConf.to_container(cfg.stage.scheduler, resolve=True),
                          run_info(cfg, model_config, datamodule.image_processor))
    read_skipped = datamodule.dataset.read_skipped
    skipped = SkippedSamples(read_skipped, len(datamodule.dataset) + sum(read_skipped.values()))
    logger = _logger(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, skipped, logger)
    if trainer.is_global_zero:
        (run_dir / "parameters.txt").write_text(log_parameter_report(model) + "\n")
    try:
        try:
            _fit(trainer, module, datamodule, resolve_resume(cfg.resume, run_dir))
        except GracefulStop as stop:
            if stop.reason != "stop_at_step":
                raise  # preempted: the checkpoint is written, the exit status says the run is not finished
            log.info("%s", stop)
            return _metrics(trainer, skipped)  # a chunk of a run: no export yet
        check_trained(cfg, module, skipped)
        metrics = _metrics(trainer, skipped)
        metrics.update(export_and_evaluate(cfg, trainer, module, tokenizer, datamodule.image_processor, run_dir, logger))
        return metrics
    finally:  # however the run ends: a resumed run opens the same wandb run again, which must be closed
        if logger and "Wandb" in type(logger).__name__ and getattr(logger, "_experiment", None) is not None:
            import wandb

            wandb.finish()


def _fit(trainer: pl.Trainer, module, datamodule, ckpt_path) -> None:
    """`trainer.fit`, with Lightning's `SIGTERMException` (a `SystemExit` without a code: exit status 0) turned into
    the `GracefulStop` that `StopAndSave` saved a checkpoint for when it came."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as exit_:
        stop = next((c.stopped for c in trainer.callbacks if isinstance(c, StopAndSave)), None)
        if stop is None:
            raise
        raise stop from exit_


def claim_run_dir(cfg) -> Path:
    """The run directory, refused when it holds a finished (or stopped) run and nothing says to continue or replace
    it: the same command twice must not lose a run."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        refuse_finished(run_dir, ["export", "checkpoints", *sorted(p.name for p in run_dir.glob("eval_*"))],
                        bool(cfg.get("overwrite")), "continue it with resume=auto")
    return run_dir


def prepare_data(cfg):
    """`(model config, tokenizer, datamodule set up for fit)`; loads no weights."""
    model_config = model_config_from(cfg)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    vocab = model_config.text_config.vocab_size
    if len(tokenizer) > vocab and not model_config.text_pretrained:
        raise ConfigError(f"model.config.vocab_size: {vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    datamodule = instantiate(cfg.data).bind(model_config, tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    log.info("data: %d samples, %s skipped while reading", len(datamodule.dataset), dict(datamodule.dataset.read_skipped))
    return model_config, tokenizer, datamodule


def build_trainer(cfg, run_dir: Path, skipped: SkippedSamples, logger) -> pl.Trainer:
    """Lightning's Trainer with mof's checkpoints (last + every N kept, written atomically), monitors and strategy."""
    accelerator = _accelerator(cfg)
    ckpt_dir, ck = run_dir / "checkpoints", cfg.checkpoint
    callbacks = [LastCheckpoint(ckpt_dir, ck.every_n_train_steps), SamplerEpoch()]
    if ck.get("keep_every_n_train_steps"):
        callbacks.append(KeptCheckpoints(ckpt_dir, ck.keep_every_n_train_steps))
    stop_at_step = int(cfg.stop_at_step) if cfg.get("stop_at_step") else None
    callbacks += [throughput_monitor(), PaddingFraction(), GradNormMonitor(), skipped,
                  StopAndSave(ckpt_dir / "last.ckpt", stop_at_step)]
    deepspeed = cfg.strategy.name.startswith("deepspeed")
    if deepspeed or cfg.strategy.name == "fsdp2":
        callbacks.append(PartitionReport(run_dir))
    if logger:
        callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="step"))
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if tcfg.get("enable_progress_bar", True):
        callbacks.append(StepProgressBar())
    tcfg.pop("precision")
    tcfg["accelerator"] = accelerator
    if tcfg.get("limit_train_batches") is None:
        tcfg.pop("limit_train_batches", None)
    return pl.Trainer(
        **tcfg, precision=_precision(cfg, accelerator), strategy=build_strategy(cfg.strategy.name, accelerator),
        logger=logger, callbacks=callbacks, default_root_dir=str(run_dir), use_distributed_sampler=False,
        enable_model_summary=False, plugins=None if deepspeed else [AtomicCheckpointIO()])


def check_trained(cfg, module: MofLitModule, skipped: SkippedSamples) -> None:
    """A run that trained on nothing, or skipped more than `data.max_skipped_fraction`, fails without an export."""
    bound = float(cfg.data.get("max_skipped_fraction", 0.01))
    if module.trained_batches == 0:
        raise TrainingFailed(f"training took no optimizer step: every batch was skipped ({dict(skipped.counts)}); "
                             "no export written")
    if skipped.fraction > bound:
        raise TrainingFailed(
            f"{skipped.fraction:.1%} of the samples were skipped during training (limit data.max_skipped_fraction="
            f"{bound}): {dict(skipped.counts)}; no export written. Fix the data, or raise the limit knowingly.")


def export_and_evaluate(cfg, trainer, module, tokenizer, image_processor, run_dir: Path, logger) -> dict:
    """`<run dir>/export`, then the `evaluate_after` benchmarks scored on it (rank 0); their metrics."""
    names = evaluate_after(cfg)
    if not (cfg.export or names):
        return {}
    export_dir = export_after_training(trainer, module, tokenizer, image_processor, run_dir / "export")
    metrics = {}
    if trainer.is_global_zero and names:
        loaded = load_for_evaluation(export_dir, next(module.model.parameters()).device)
        for name in names:
            benchmark = get_benchmark(name)(benchmark_section(cfg, name), cfg.paths.data_dir)
            results = evaluate_benchmark(benchmark, export_dir, run_dir / f"eval_{name}", template=cfg.stage.template,
                                         loaded=loaded)
            scores = {f"eval/{name}/{m}": results[m] for m in results["metric_names"]}
            metrics.update(scores)
            if logger:
                logger.log_metrics(scores)
    return metrics


def evaluate_after(cfg) -> list[str]:
    """The benchmarks to score after training: `evaluate_after` as a name or a list of names (null: none)."""
    value = cfg.get("evaluate_after")
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def benchmark_section(cfg, name: str) -> dict:
    """A benchmark's settings after training: `benchmarks.<name>` of the run's config (composed from
    `conf/benchmark/<name>.yaml`, as evaluate.py reads it); the synthetic ones are drawn like the run's synthetic data
    (seed, size, option order), `synthetic_benchmark.pairs_per_pattern` pairs of each pattern."""
    node = (cfg.get("benchmarks") or {}).get(name)
    section = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    if name in ("synthetic", "synthetic_pope") and not section.get("root"):
        synthetic = cfg.data.get("synthetic") or {}
        section["synthetic"] = {**(section.get("synthetic") or {}), "seed": synthetic.get("seed"),
                                "size": synthetic.get("size"), "shuffle_options": synthetic.get("shuffle_options"),
                                "pairs_per_pattern": cfg.synthetic_benchmark.pairs_per_pattern}
    return section


def export_after_training(trainer, module, tokenizer, image_processor, out: Path) -> Path:
    """The run's final model, gathered from all ranks under ZeRO-3 or FSDP2, written by rank 0 to `<run dir>/export`."""
    model = module.model
    if is_fsdp2(model):   # sharded weights: rebuilt whole from the final state's checkpoint, as `mof.export` does
        final = out.parent / "checkpoints" / "last.ckpt"
        callback = trainer.checkpoint_callback
        if not (isinstance(callback, LastCheckpoint) and callback.holds(trainer.global_step)):
            trainer.save_checkpoint(final, weights_only=False)   # every rank: FSDP2 gathers the weights, rank 0 writes
        if trainer.is_global_zero:
            export_checkpoint(final, out, overwrite=True)
        trainer.strategy.barrier("mof-export")
        return out
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
    print_outputs(cfg)
    value = metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    return value


def print_outputs(cfg) -> None:
    """Where a finished run put what it made (stdout: results only), said once: by rank 0."""
    if is_secondary_rank():
        return
    run_dir = Path(cfg.paths.output_dir)
    made = [name for name in ("export", "checkpoints/last.ckpt", *sorted(p.name + "/results.json" for p in run_dir.glob("eval_*")))
            if (run_dir / name).exists()]
    print(f"run: {run_dir}" + (f" ({', '.join(made)})" if made else ""))
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    if offline:
        print(f"wandb (offline): {offline[-1]}; upload it with: wandb sync {offline[-1]}")

"""`MofDataModule`: LLaVA-format data for training, with the checks that keep a run from training on nothing."""

from __future__ import annotations

import os
import signal
from collections import Counter

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ..errors import ConfigError, MofError

from .collate import Collator
from .conversation import ConversationError, get_template
from .dataset import ConversationDataset
from .images import ImageError, MofImageProcessor
from .records import Source
from .sampler import ModalityGroupedBatchSampler
from .synthetic import checked_question_share, generate, sources as synthetic_sources


def ignore_sigterm(worker_id: int) -> None:
    """Data workers outlive a SIGTERM sent to the whole process group (SLURM preemption, `timeout`): the main
    process decides, writes its checkpoint at the next step and ends them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class DataCheckError(MofError, RuntimeError):
    """The data would train on (almost) nothing; raised before any weight loads."""


class MofDataModule(pl.LightningDataModule):
    """Args:
        sources: datasets to mix, each `{path, image_root, weight}`; none with `synthetic`: the synthetic
            captions, and its questions unless the template is `plain`.
        template: `plain`, `vicuna_v1` or `chat_template`.
        max_length: tokens per sample, visual tokens included (interleaving doubles them).
        packing: pack each batch's samples into shared rows instead of padding every sample to the longest (same
            samples per step, same loss; see `Collator`); pack_length: the rows' length (None: the batch's longest
            sample, never more costly than padding; with flash attention's variable-length kernels, e.g. max_length).
        image_mode: `pad` or `resize`; share_first: every encoder gets the first encoder's pixels.
        check_samples: how many records (spread over the data) the start-up check encodes and whose images it
            resolves; check_decode_images: how many of those images it decodes;
        max_skipped_fraction: above it (start-up check, or skips during training), training refuses to run.
        max_image_pixels, max_aspect_ratio: larger images (padded size, with `pad`) are skipped as `image_too_large`.
        synthetic: arguments of `mof.data.synthetic.generate` (`out`, ...), to create the data on first use.
    """

    def __init__(self, sources: list | None = None, template: str = "vicuna_v1", batch_size: int = 8, num_workers: int = 2,
                 max_length: int = 2048, seed: int = 0, group_by_modality: bool = True, image_mode: str = "pad",
                 share_first: bool = False, allow_outside_root: bool = False, check_samples: int = 2000,
                 check_decode_images: int = 16, max_skipped_fraction: float = 0.01, synthetic: dict | None = None,
                 system_prompt: str | None = None, max_image_pixels: int = 50_000_000, max_aspect_ratio: float = 100.0,
                 packing: bool = False, pack_length: int | None = None):
        super().__init__()
        self.synthetic = dict(synthetic) if synthetic else None
        if self.synthetic:
            checked_question_share(self.synthetic.get("question_share"))   # a wrong share: refused before any weight loads
        if not sources and not self.synthetic:
            raise ConfigError("data.sources: expected at least one dataset {path, image_root, weight}")
        self.sources = ([Source(**dict(s)) for s in sources] if sources
                        else synthetic_sources(self.synthetic["out"], template))
        self.template_name = template
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.packing = packing
        self.pack_length = pack_length
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.image_mode = image_mode
        self.share_first = share_first
        self.allow_outside_root = allow_outside_root
        self.check_samples = check_samples
        self.check_decode_images = check_decode_images
        self.max_skipped_fraction = max_skipped_fraction
        self.system_prompt = system_prompt
        self.max_image_pixels = max_image_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self.dataset = None
        self._resume: dict | None = None
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def bind(self, model_config, tokenizer) -> "MofDataModule":
        """Attach what the data depends on: the model's visual token count and encoders, the tokenizer."""
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.image_processor = MofImageProcessor.from_model_config(model_config, self.image_mode, self.share_first)
        self.image_processor.max_pixels = self.max_image_pixels
        self.image_processor.max_aspect_ratio = self.max_aspect_ratio
        kwargs = {"system": self.system_prompt} if self.system_prompt is not None else {}
        self.template = get_template(self.template_name, **kwargs)
        return self

    def prepare_data(self):
        if self.synthetic:
            generate(**self.synthetic)

    def setup(self, stage: str | None = None):
        if self.dataset is not None:
            return
        self.prepare_data()  # idempotent; also covers `setup` called without `prepare_data`
        self.dataset = ConversationDataset(
            self.sources, self.tokenizer, self.template, self.image_processor, self.model_config.image_token_id,
            self.model_config.num_visual_tokens, self.max_length, self.allow_outside_root, self.seed)
        self.lengths = self.dataset.modality_lengths()  # once: every loader's sampler groups by them
        if len(self.dataset) == 0:
            raise ConfigError(f"data: no usable records in {[s.path for s in self.sources]} (skipped: {dict(self.dataset.read_skipped)})")
        self.check_data()

    def check_data(self) -> dict:
        """Before any weight loads: encode a spread of records, resolve (stat) every image among them and decode a
        few, and refuse to train when more than `max_skipped_fraction` of them would be skipped."""
        ds = self.dataset
        n = len(ds)
        step = max(1, n // max(1, self.check_samples))
        counts, examples, decoded = Counter(), {}, 0
        for i in range(0, n, step):
            counts["checked"] += 1
            record, _ = ds.records[i]
            try:
                ds.encode_text(i)
                if record.get("image"):
                    path = ds.image_path(i)
                    if not path.is_file():
                        raise ImageError("missing_image", str(path))
                    if decoded < self.check_decode_images:
                        decoded += 1
                        self.image_processor.load(path)
            except (ConversationError, ImageError) as e:
                counts[e.reason] += 1
                examples.setdefault(e.reason, (str(record)[:200], str(e)[:200]))
        read = sum(ds.read_skipped.values())
        skipped = sum(v for k, v in counts.items() if k != "checked")
        read_fraction = read / (n + read)
        fraction = read_fraction + (1 - read_fraction) * skipped / max(1, counts["checked"])
        report = {**counts, "read_skipped": dict(ds.read_skipped), "skipped_fraction": fraction}
        if fraction > self.max_skipped_fraction:
            reasons = "; ".join(f"{k} x{v} (e.g. {examples[k][1]!r} in record {examples[k][0]})"
                                for k, v in counts.most_common() if k != "checked")
            read_reasons = ", ".join(f"{k} x{v}" for k, v in ds.read_skipped.most_common())
            hint = ""
            if any(k.startswith("fully_masked") for k in counts):
                hint = (f" Fully masked samples mean template {self.template_name!r} does not fit tokenizer "
                        f"{self.tokenizer.name_or_path!r} or this data, or max_length {self.max_length} cuts every answer.")
            raise DataCheckError(
                f"data: {fraction:.1%} of the samples would be skipped (limit data.max_skipped_fraction="
                f"{self.max_skipped_fraction}): {skipped} of {counts['checked']} checked records"
                f"{': ' + reasons if reasons else ''}"
                f"{'; while reading ' + str(read) + ' of ' + str(n + read) + ' records: ' + read_reasons if read else ''}."
                f"{hint} Check data.sources (paths, image_root), the template and data.max_length (visual tokens: "
                f"{self.model_config.num_visual_tokens}).")
        return report

    def train_dataloader(self):
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = ModalityGroupedBatchSampler(self.lengths, self.batch_size, self.seed,
                                              group_by_modality=self.group_by_modality, num_replicas=world, rank=rank)
        if self._resume is not None:
            # Kept for every loader built from now on: DeepSpeed builds one to count steps before the
            # checkpoint is restored, and the one that trains after. The sampler skips only within
            # the checkpoint's epoch, and only on its first iteration.
            sampler.load_state_dict(self._resume)
        self.sampler = sampler
        pad = self.tokenizer.pad_token_id
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          collate_fn=Collator(pad, self.packing, self.pack_length), persistent_workers=self.num_workers > 0,
                          worker_init_fn=ignore_sigterm)

    # The sampler's position goes into checkpoints, so a resumed run continues with the next unseen batch.
    def state_dict(self) -> dict:
        if self.trainer is None or getattr(self, "sampler", None) is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "consumed": progress.processed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state:
            if state.get("seed", self.seed) != self.seed:
                raise ConfigError(f"resume: the checkpoint's data seed {state['seed']} differs from data.seed={self.seed}")
            self._resume = state
            if getattr(self, "sampler", None) is not None:  # a loader built before the restore
                self.sampler.load_state_dict(state)

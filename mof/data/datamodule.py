"""`MofDataModule`: LLaVA-format data for training, with the checks that keep a run from training on nothing."""

from __future__ import annotations

import os
from collections import Counter

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from .collate import Collator
from .conversation import ConversationError, get_template
from .dataset import ConversationDataset
from .images import MofImageProcessor
from .records import Source
from .sampler import ModalityGroupedBatchSampler
from .synthetic import generate, sources as synthetic_sources


class DataCheckError(RuntimeError):
    """The data would train on (almost) nothing; raised before any weight loads."""


class MofDataModule(pl.LightningDataModule):
    """Args:
        sources: datasets to mix, each `{path, image_root, weight}`; none with `synthetic`: the synthetic
            captions, and its questions unless the template is `plain`.
        template: `plain`, `vicuna_v1` or `chat_template`.
        max_length: tokens per sample, visual tokens included (interleaving doubles them).
        image_mode: `pad` or `resize`; share_first: every encoder gets the first encoder's pixels.
        mask_check_samples: how many records the start-up label check encodes;
        max_fully_masked_fraction: above it, training refuses to start.
        synthetic: arguments of `mof.data.synthetic.generate` (`out`, ...), to create the data on first use.
    """

    def __init__(self, sources: list | None = None, template: str = "vicuna_v1", batch_size: int = 8, num_workers: int = 2,
                 max_length: int = 2048, seed: int = 0, group_by_modality: bool = True, image_mode: str = "pad",
                 share_first: bool = False, allow_outside_root: bool = False, mask_check_samples: int = 2000,
                 max_fully_masked_fraction: float = 0.01, synthetic: dict | None = None,
                 system_prompt: str | None = None, max_image_pixels: int = 50_000_000):
        super().__init__()
        self.synthetic = dict(synthetic) if synthetic else None
        if not sources and not self.synthetic:
            raise ValueError("data.sources: expected at least one dataset {path, image_root, weight}")
        self.sources = ([Source(**dict(s)) for s in sources] if sources
                        else synthetic_sources(self.synthetic["out"], template))
        self.template_name = template
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.image_mode = image_mode
        self.share_first = share_first
        self.allow_outside_root = allow_outside_root
        self.mask_check_samples = mask_check_samples
        self.max_fully_masked_fraction = max_fully_masked_fraction
        self.system_prompt = system_prompt
        self.max_image_pixels = max_image_pixels
        self.dataset = None
        self._resume: dict | None = None
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def bind(self, model_config, tokenizer) -> "MofDataModule":
        """Attach what the data depends on: the model's visual token count and encoders, the tokenizer."""
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.image_processor = MofImageProcessor.from_model_config(model_config, self.image_mode, self.share_first)
        self.image_processor.max_pixels = self.max_image_pixels
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
            raise ValueError(f"data: no usable records in {[s.path for s in self.sources]} (skipped: {dict(self.dataset.read_skipped)})")
        self.check_label_masking()

    def check_label_masking(self) -> dict:
        """Encode a spread of records (text only) and refuse to train when too many supervise nothing."""
        n = len(self.dataset)
        step = max(1, n // max(1, self.mask_check_samples))
        counts, example = Counter(), None
        for i in range(0, n, step):
            counts["checked"] += 1
            try:
                self.dataset.encode_text(i)
            except ConversationError as e:
                counts[e.reason] += 1
                if e.reason.startswith("fully_masked") and example is None:
                    example = i
        masked = counts["fully_masked"] + counts["fully_masked_after_truncation"]
        fraction = masked / max(1, counts["checked"])
        if fraction > self.max_fully_masked_fraction:
            record, _ = self.dataset.records[example]
            raise DataCheckError(
                f"{masked} of {counts['checked']} checked samples ({fraction:.1%}) have no supervised token with "
                f"template {self.template_name!r}, tokenizer {self.tokenizer.name_or_path!r} and max_length {self.max_length}: "
                f"the template does not fit this tokenizer or data, or max_length cuts every answer. "
                f"Example record: {str(record)[:300]}"
            )
        return dict(counts)

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
                          collate_fn=Collator(pad), persistent_workers=self.num_workers > 0)

    # The sampler's position goes into checkpoints, so a resumed run continues with the next unseen batch.
    def state_dict(self) -> dict:
        if self.trainer is None or getattr(self, "sampler", None) is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "consumed": progress.processed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state:
            if state.get("seed", self.seed) != self.seed:
                raise ValueError(f"resume: the checkpoint's data seed {state['seed']} differs from data.seed={self.seed}")
            self._resume = state
            if getattr(self, "sampler", None) is not None:  # a loader built before the restore
                self.sampler.load_state_dict(state)

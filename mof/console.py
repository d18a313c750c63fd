"""A console a person can read: each message once, on stderr (stdout carries results only), without adverts or
library warnings that do not concern a user of mof. Entry points call `setup_console()` first."""

from __future__ import annotations

import logging
import os
import warnings


class _Drop(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def setup_console() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import lightning.pytorch  # noqa: F401  (adds its own handler at import: removed below)
    import transformers

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # one handler, the root's (Hydra's), prints them
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_Drop("💡 Tip"))
    logging.getLogger("DeepSpeed").addFilter(_Drop("Setting accelerator to CPU"))  # DeepSpeed logs to stdout
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it tried: eight lines per import
    transformers.utils.logging.disable_progress_bar()  # weight loading/saving bars; training's bar stays
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # Two of Lightning's warnings that are wrong about mof's runs: the frozen towers are in eval mode on purpose
    # (no dropout, fixed norms), and a mid-epoch resume is exact because the datamodule saves and restores the
    # sampler's position itself (`MofDataModule.state_dict`), which Lightning's check does not look at
    # (tests/test_train.py::test_sigkill_mid_epoch_then_resume_matches holds it).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    # mine.py's prediction writer gets one whole shard per step and never reads batch indices
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")

"""The training dataset: LLaVA records -> token ids, labels and per-encoder pixels.

A sample that cannot be used comes back as `{"skip": reason}` and is counted by the collator;
nothing here raises mid-epoch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from .conversation import ConversationError, Encoded, Template, normalize_turns
from .images import ImageError, MofImageProcessor
from .records import Source, mix


class ConversationDataset(Dataset):
    def __init__(self, sources: list[Source], tokenizer, template: Template, image_processor: MofImageProcessor,
                 image_token_id: int, num_image_tokens: int, max_length: int, allow_outside_root: bool = False,
                 seed: int = 0):
        self.sources = sources
        self.tokenizer = tokenizer
        self.template = template
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.allow_outside_root = allow_outside_root
        self.records, self.read_skipped = mix(sources, seed)

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ text
    def encode_text(self, index: int) -> tuple[Encoded, bool]:
        """Token ids and labels of record `index`, truncated; raises `ConversationError`."""
        record, _ = self.records[index]
        turns = normalize_turns(record.get("conversations"), has_image=bool(record.get("image")))
        enc = self.template.encode(turns, self.tokenizer, self.image_token_id, self.num_image_tokens)
        if enc.num_supervised == 0:
            raise ConversationError("fully_masked", "no token of the sample is supervised")
        return self._truncate(enc)

    def _truncate(self, enc: Encoded) -> tuple[Encoded, bool]:
        if len(enc.input_ids) <= self.max_length:
            return enc, False
        image_positions = [i for i, t in enumerate(enc.input_ids) if t == self.image_token_id]
        if image_positions and image_positions[-1] >= self.max_length:
            raise ConversationError("truncated_visual_tokens",
                                    f"{len(enc.input_ids)} tokens, visual tokens end at {image_positions[-1] + 1} > max_length {self.max_length}")
        cut = Encoded(enc.input_ids[: self.max_length], enc.labels[: self.max_length])
        if cut.num_supervised == 0:
            raise ConversationError("fully_masked_after_truncation", f"max_length {self.max_length} cuts every answer")
        return cut, True

    # ------------------------------------------------------------------ images
    def image_path(self, index: int) -> Path:
        record, src = self.records[index]
        rel = Path(record["image"])
        root = Path(self.sources[src].image_root or Path(self.sources[src].path).parent)
        if rel.is_absolute():
            if not self.allow_outside_root:
                raise ImageError("unsafe_image_path", f"absolute image path {rel} (set data.allow_outside_root=true to allow)")
            return rel
        full = (root / rel).resolve()
        if not self.allow_outside_root and not full.is_relative_to(root.resolve()):
            raise ImageError("unsafe_image_path", f"{rel} escapes the image root {root}")
        return full

    def __getitem__(self, index: int) -> dict:
        try:
            enc, truncated = self.encode_text(index)
            record, _ = self.records[index]
            pixels = self.image_processor.load(self.image_path(index)) if record.get("image") else None
        except (ConversationError, ImageError) as e:
            return {"skip": e.reason, "index": index}
        except Exception as e:  # noqa: BLE001  one sample never stops an epoch; the reason names the error type
            return {"skip": f"error_{type(e).__name__}", "index": index}
        return {"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels),
                "pixel_values": pixels, "truncated": truncated, "index": index}

    def modality_lengths(self) -> list[int]:
        """Cheap length estimates: positive for samples with an image, negative for text-only (as LLaVA)."""
        lengths = []
        for record, _ in self.records:
            conv = record.get("conversations") or []
            words = sum(len(str(t.get("value", "")).split()) for t in conv if isinstance(t, dict))
            n = int(words * 1.5) + 1
            lengths.append(n + self.num_image_tokens if record.get("image") else -n)
        return lengths

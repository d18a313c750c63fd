"""What every benchmark is: its items (an image and a prompt each), how one response is judged, how the judged
predictions score, and which of the scores is the primary metric. Benchmarks are registered in `__init__.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from PIL import Image


@dataclass
class Item:
    id: int                    # unique within the benchmark run, in its order
    image: Path | Image.Image  # a file, or a decoded image (lmms-eval hands those)
    prompt: str                # the text after the image
    fields: dict = field(default_factory=dict)   # copied into the item's prediction (question, answer, ...)


class Benchmark:
    """Args: `section`: the benchmark's config section (`conf/benchmark/<name>.yaml`, plain dict);
    `data_dir`: where benchmarks generated on first use are written."""

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]      # the primary first; what reports, loggers and sweeps read
    max_new_tokens: ClassVar[int] = 12

    def __init__(self, section: dict, data_dir: str | Path | None = None):
        self.section = dict(section)
        self.data_dir = data_dir

    def items(self) -> list[Item]:
        raise NotImplementedError

    def judge(self, prediction: dict) -> dict:
        """`prediction` (an item's fields + `response`, None when it could not be answered) with what the response
        means (`parsed`) and whether it is right (`correct`)."""
        raise NotImplementedError

    def score(self, predictions: list[dict]) -> dict:
        raise NotImplementedError

    def complete(self, predictions: list[dict], source: Path) -> list[dict]:
        """Predictions read back from a file (another tool's too), with what scoring needs and they lack."""
        return predictions

    def describe(self) -> dict:
        """What the results should record of this run's settings."""
        return {}

"""`mof` as an lmms-eval model: `lmms-eval --model mof --model_args pretrained=RUN/export --tasks mmvp,pope`.

lmms-eval finds it through the entry-point group `lmms_eval.models` (pyproject.toml); requests are answered by
mof's own batched greedy generation, the prompt after the image as lmms-eval's task writes it. Install beside mof
without torchvision (which lmms-eval requires but these paths never import): see the README.
"""

from __future__ import annotations

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from ..data.conversation import TEMPLATES
from ..data.images import ImageError
from ..errors import ConfigError, unknown
from .benchmarks.base import Item
from .generation import answer
from .loading import load_for_evaluation

MANIFEST = ModelManifest(model_id="mof", simple_class_path="mof.evaluation.lmms_eval_plugin.MofLmms")


class MofLmms(lmms):
    """Args (`--model_args`): `pretrained` (a mof export, a Lightning .ckpt or a llava-hf LLaVA), `device`,
    `batch_size`, `template` (default: the one the checkpoint was trained with)."""

    def __init__(self, pretrained: str, device: str = "cpu", batch_size: int | str = 16, template: str | None = None,
                 **kwargs):
        super().__init__()
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ConfigError(f"--model_args batch_size: expected a positive integer, got {batch_size!r}")
        if template is not None and template not in TEMPLATES:
            raise ConfigError(unknown("--model_args template", "template", template, TEMPLATES))
        self.loaded = load_for_evaluation(pretrained, device)
        self.template = template or self.loaded.template
        self.batch_size = int(batch_size)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One image per request (the first of its visuals), greedy, cut at the task's `until` strings."""
        groups: dict[tuple, list[int]] = {}
        for k, request in enumerate(requests):
            gen_kwargs = request.args[1]
            groups.setdefault((int(gen_kwargs.get("max_new_tokens", 16)), tuple(_until(gen_kwargs))), []).append(k)
        out = [""] * len(requests)
        for (max_new_tokens, until), indices in groups.items():
            items = []
            for k in indices:
                context, _, doc_to_visual, doc_id, task, split = requests[k].args
                visuals = doc_to_visual(self.task_dict[task][split][doc_id])
                if not visuals:
                    raise ConfigError(f"lmms-eval request {k} ({task} doc {doc_id}) has no image: mof answers image "
                                     "questions")
                items.append(Item(k, visuals[0], context))
            for k, p in zip(indices, answer(self.loaded, items, self.template, self.batch_size, max_new_tokens)):
                if p["error"]:  # an empty answer would be scored as a wrong one, without a word
                    raise ImageError("unreadable_image", f"lmms-eval request {k} ({requests[k].args[4]} doc "
                                     f"{requests[k].args[3]}): {p['error']}")
                out[k] = _cut(p["response"], until)
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("mof answers lmms-eval's generate_until tasks (MMVP, POPE, ...); loglikelihood "
                                  "tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("mof answers single-round generate_until tasks")


def _until(gen_kwargs: dict) -> list[str]:
    until = gen_kwargs.get("until") or []
    return [until] if isinstance(until, str) else list(until)


def _cut(text: str, until) -> str:
    for stop in until:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text

"""Multiple-choice prompts: the question, its options, and an instruction (LLaVA-1.5's by default)."""

from __future__ import annotations

MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."
PROMPTS = {"llava15": MCQ_SUFFIX, "bare": None}  # `benchmark.prompt`: a name here, or any text


def instruction(prompt: str | None) -> str | None:
    return PROMPTS.get(prompt, prompt) if prompt is not None else None


def format_mcq_prompt(question: str, options: str, suffix: str | None = MCQ_SUFFIX) -> str:
    return f"{question}\n{options}" + (f"\n{suffix}" if suffix else "")

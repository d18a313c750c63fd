"""The instructions that follow a question, as LLaVA-1.5 writes them: one home for the training data's questions
and the benchmarks' prompts.

`benchmark.prompt` names a style (`llava15`: LLaVA-1.5's instruction for the kind of answer; `bare`: none) or is
any text, put on its own line after the question. MMVP's prompts as the paper's script and lmms-eval write them are
here too (`benchmark.scoring=paper|lmms_eval`).
"""

from __future__ import annotations

import re

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."  # LLaVA-1.5's multiple choice
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."  # LLaVA-1.5's short answers (POPE)
INSTRUCTIONS = {"multiple_choice": MCQ_INSTRUCTION, "short_answer": SHORT_ANSWER_INSTRUCTION}


def instruction(prompt: str | None, answer: str = "multiple_choice") -> str | None:
    """The instruction for `prompt` (a style name or any text) and the kind of `answer` asked for."""
    if prompt is None or prompt == "bare":
        return None
    return INSTRUCTIONS[answer] if prompt == "llava15" else prompt


def with_instruction(text: str, suffix: str | None) -> str:
    return text + (f"\n{suffix}" if suffix else "")


def format_mcq_prompt(question: str, options: str, suffix: str | None = MCQ_INSTRUCTION) -> str:
    return with_instruction(f"{question}\n{options}", suffix)


def paper_mcq_prompt(question: str, options: str) -> str:
    """The MMVP paper's prompt (`scripts/evaluate_mllm.py`): question and options joined by one space, no
    instruction."""
    return f"{question} {options}"


_LMMS_EVAL_OPTION = re.compile(r"\([a-z]\)\s*([^(]+?)(?=\s*\([a-z]\)|$)", re.IGNORECASE)


def lmms_eval_mcq_prompt(question: str, options: str) -> str:
    """lmms-eval 0.7.3's MMVP prompt (`tasks/mmvp`: `doc_to_text` with its default `post_prompt`): the options
    re-lettered `A. Left` / `B. Right`, one per line, then LLaVA-1.5's letter instruction."""
    lines = "\n".join(f"{chr(65 + i)}. {text.strip()}" for i, text in enumerate(_LMMS_EVAL_OPTION.findall(options)))
    return f"{question}\n{lines}\n{MCQ_INSTRUCTION}"

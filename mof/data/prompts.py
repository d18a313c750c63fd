"""The instructions that follow a question, as LLaVA-1.5 writes them: one home for the training data's questions
and the benchmarks' prompts.

`benchmark.prompt` names a style (`llava15`: LLaVA-1.5's instruction for the kind of answer; `bare`: none) or is
any text, put on its own line after the question.
"""

from __future__ import annotations

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

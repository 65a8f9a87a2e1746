"""Alpaca prompt templates of LLaMA-Adapter V2
(docs/llama_adapter_v2.md#prompt-templates,
docs/llama_adapter_v2.md#data-formats).

The released models were trained with the two Alpaca templates below; the
answer follows ``'### Response:'`` directly (no space, no newline). The
paper's expert integration (a caption or OCR text produced by another model)
enters the prompt as the Alpaca *input*.
"""
from typing import Optional

PROMPT_NO_INPUT = (
    'Below is an instruction that describes a task. Write a response that '
    'appropriately completes the request.\n\n'
    '### Instruction:\n{instruction}\n\n### Response:')

PROMPT_WITH_INPUT = (
    'Below is an instruction that describes a task, paired with an input that '
    'provides further context. Write a response that appropriately completes '
    'the request.\n\n'
    '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n'
    '### Response:')

# MME evaluation (``util/evaluate_mme.py``): the no-input template with a
# short-answer second sentence.
PROMPT_SHORT_ANSWER = (
    'Below is an instruction that describes a task. Write a response that '
    'appropriately completes the request using a single word or phrase.\n\n'
    '### Instruction:\n{instruction}\n\n### Response:')

CAPTION_INSTRUCTION = 'Generate caption of this image'


def format_prompt(instruction: str,
                  input: Optional[str] = None,
                  context: Optional[str] = None,
                  no_input_tmpl: str = PROMPT_NO_INPUT,
                  with_input_tmpl: str = PROMPT_WITH_INPUT) -> str:
    """Fill an Alpaca template.

    Args:
        instruction (str): The instruction (or question).
        input (str, optional): The Alpaca input. An empty or blank string
            counts as absent (the Alpaca convention; the released code tested
            for ``None`` only, docs/llama_adapter_v2.md#data-formats). Defaults
            to None.
        context (str, optional): Expert context (e.g. a caption or OCR text
            of the image from another model), appended to the input on a new
            line. Defaults to None.
        no_input_tmpl (str): Template used without input. Defaults to
            :data:`PROMPT_NO_INPUT`.
        with_input_tmpl (str): Template used with input. Defaults to
            :data:`PROMPT_WITH_INPUT`.

    Returns:
        str: The prompt (the answer is appended right after it).
    """
    parts = [
        s.strip() for s in (input, context)
        if isinstance(s, str) and s.strip()
    ]
    if parts:
        return with_input_tmpl.format(
            instruction=instruction, input='\n'.join(parts))
    return no_input_tmpl.format(instruction=instruction)

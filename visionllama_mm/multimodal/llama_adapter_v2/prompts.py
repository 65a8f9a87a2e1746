"""Prompts and tokenisation of LLaMA-Adapter V2
(docs/llama_adapter_v2.md#prompt-templates,
docs/llama_adapter_v2.md#data-formats).

The released models were trained with the two Alpaca templates below; the
answer follows ``'### Response:'`` directly (no space, no newline). The
paper's expert integration (a caption or OCR text produced by another model)
enters the prompt as the Alpaca *input*.

Data samples (mmpretrain ``DataSample``) become prompts with
:func:`build_prompt` and training answers with :func:`build_target`;
:func:`tokenize_for_training` turns them into right-padded token / label
batches and :func:`tokenize_prompts` turns prompts into the left-padded
batch that generation starts from.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    'PROMPT_NO_INPUT', 'PROMPT_WITH_INPUT', 'PROMPT_SHORT_ANSWER',
    'CAPTION_INSTRUCTION', 'format_prompt', 'is_caption_sample',
    'build_prompt', 'build_target', 'tokenize_for_training', 'tokenize_prompts'
]

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


def is_caption_sample(sample) -> bool:
    """An image-text (caption) sample: a ``gt_caption`` and no question."""
    return not sample.get('question') and 'gt_caption' in sample


def _first(value):
    if isinstance(value, (list, tuple)):
        return value[0] if value else ''
    return value


def build_prompt(sample,
                 task: str = 'caption',
                 caption_instruction: str = CAPTION_INSTRUCTION,
                 prompt_tmpl: Optional[Union[str, dict]] = None,
                 context_key: str = 'context') -> str:
    """Prompt text of a data sample (template filled, answer not).

    Args:
        sample: A data sample with an optional ``question`` (else the
            caption instruction is used), ``input`` and ``context_key``
            field.
        task (str): The model's task; a sample without question is a
            caption sample for ``'caption'`` or when it has a
            ``gt_caption``, an error otherwise. Defaults to 'caption'.
        caption_instruction (str): Instruction of caption samples. Defaults
            to :data:`CAPTION_INSTRUCTION`.
        prompt_tmpl (str | dict, optional): None for the Alpaca templates; a
            ``dict(no_input=..., with_input=...)`` pair of templates; or one
            string formatted with ``instruction``, ``input`` and the sample's
            fields. Defaults to None.
        context_key (str): Field of the expert context, inserted as the
            Alpaca input. Defaults to 'context'.

    Returns:
        str: The prompt.
    """
    if sample.get('question'):
        instruction = str(sample.get('question'))
    elif task == 'caption' or 'gt_caption' in sample:
        instruction = caption_instruction
    else:
        raise ValueError(f"task '{task}' needs a `question` in each "
                         'data sample')
    inp = sample.get('input')
    context = sample.get(context_key)
    if prompt_tmpl is None:
        return format_prompt(instruction, inp, context)
    if isinstance(prompt_tmpl, dict):
        return format_prompt(
            instruction,
            inp,
            context,
            no_input_tmpl=prompt_tmpl.get('no_input', PROMPT_NO_INPUT),
            with_input_tmpl=prompt_tmpl.get('with_input', PROMPT_WITH_INPUT))
    fields = dict(sample.to_dict())
    fields.update(
        instruction=instruction,
        input='\n'.join(s for s in (inp, context) if isinstance(s, str) and s))
    return prompt_tmpl.format(**fields)


def build_target(sample) -> str:
    """Answer text of a training sample: its (first) caption, or its
    (first, or highest-weighted) answer."""
    if is_caption_sample(sample):
        return str(_first(sample.get('gt_caption')))
    answer = sample.get('gt_answer')
    if answer is None:
        raise ValueError('training samples need `gt_caption` or '
                         '`gt_answer`')
    weights = sample.get('gt_answer_weight')
    if isinstance(answer, (list, tuple)) and weights is not None \
            and len(weights) == len(answer):
        answer = answer[int(torch.as_tensor(weights).argmax())]
    return str(_first(answer))


def tokenize_for_training(tokenizer, prompts: Sequence[str],
                          targets: Sequence[str],
                          max_words: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token ids and labels of training prompts and answers
    (docs/llama_adapter_v2.md#training-loss).

    BOS + prompt + answer + EOS, truncated to ``max_words`` and right
    padded with 0; labels are 0 (ignored) over the prompt and padding.

    Args:
        tokenizer: ``encode(text, bos, eos)`` (see :class:`.llm.
            LLaMATokenizer`).
        prompts (Sequence[str]): Filled prompts.
        targets (Sequence[str]): Their answers.
        max_words (int): Longest sequence kept.

    Returns:
        tuple: ``(tokens, labels)``, both (B, T) long tensors.
    """
    rows, labels = [], []
    for prompt, target in zip(prompts, targets):
        full = tokenizer.encode(prompt + target, bos=True, eos=True)
        n_prompt = len(tokenizer.encode(prompt, bos=True, eos=False))
        full = full[:max_words]
        label = [0] * min(n_prompt, len(full)) + full[n_prompt:]
        rows.append(full)
        labels.append(label)
    length = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    target = torch.zeros(len(rows), length, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        tokens[i, :len(r)] = torch.tensor(r)
        target[i, :len(lab)] = torch.tensor(lab)
    return tokens, target


def tokenize_prompts(tokenizer, prompts: List[str], device: torch.device
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """BOS + prompt ids, left padded with 0 to the longest prompt.

    Args:
        tokenizer: ``encode(text, bos, eos)``.
        prompts (list[str]): Filled prompts.
        device (torch.device): Device of the outputs.

    Returns:
        tuple: ``(tokens, mask)``, (B, T) long tensors; ``mask`` is 1 on
        prompt tokens and 0 on padding.
    """
    ids = [tokenizer.encode(p, bos=True, eos=False) for p in prompts]
    longest = max(len(i) for i in ids)
    tokens = torch.zeros(len(ids), longest, dtype=torch.long, device=device)
    mask = torch.zeros(len(ids), longest, dtype=torch.long, device=device)
    for i, row in enumerate(ids):
        tokens[i, longest - len(row):] = torch.tensor(row)
        mask[i, longest - len(row):] = 1
    return tokens, mask

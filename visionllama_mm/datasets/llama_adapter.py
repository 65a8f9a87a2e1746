"""Datasets and a transform for LLaMA-Adapter V2 training
(docs/llama_adapter_v2.md#data-formats).

* :class:`LLaMAAdapterInstructionDataset`: instruction JSON in the Alpaca
  format (``{instruction, input, output}``, text only) and the LLaVA format
  (``{image, conversations}``): every turn of a conversation is one sample
  with the earlier turns as its context (``turns='all'``), or only the
  first turn as in the released LLaMA-Adapter V2 finetuning
  (``turns='first'``).
* :class:`LLaMAAdapterCaptionTSVDataset`: the released pretraining format,
  tab-separated ``url`` (a local image path) and ``caption`` columns, one
  file or a YAML ``META: [file, ...]`` list. COCO-caption JSON works through
  mmpretrain's ``COCOCaption``.
* :class:`LoadImageOrBlank`: loads ``img_path`` like ``LoadImageFromFile``
  (BGR) or, for text-only samples, gives a blank image and sets
  ``text_only=True`` (the model then feeds a zero image in normalised space,
  like the released code).
"""
import csv
import json
import os.path as osp
from typing import List, Optional

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.fileio import join_path

from visionllama_mm.registry import DATASETS, TRANSFORMS
from visionllama_mm.utils import check_choice

__all__ = [
    'LLaMAAdapterInstructionDataset', 'LLaMAAdapterCaptionTSVDataset',
    'LoadImageOrBlank'
]


def _ann_files(ann_file: str) -> List[str]:
    """A single annotation file, or the ``META`` list of a YAML file."""
    if ann_file.endswith(('.yaml', '.yml')):
        import mmengine
        meta = mmengine.load(ann_file).get('META')
        if not meta:
            raise ValueError(f'{ann_file} has no META list')
        root = osp.dirname(ann_file)
        return [m if osp.isabs(m) else osp.join(root, m) for m in meta]
    return [ann_file]


def _under_prefix(prefix: str, path: str) -> str:
    """``path`` joined to ``prefix`` unless absolute or no prefix is set."""
    return path if osp.isabs(path) or not prefix else join_path(prefix, path)


#: Speaker names of LLaVA ``conversations`` (``from`` field) in the
#: dialogue history written into a later turn's context.
LLAVA_ROLES = {'human': 'Human', 'gpt': 'Assistant'}
TURN_MODES = ('all', 'first')


@DATASETS.register_module()
class LLaMAAdapterInstructionDataset(BaseDataset):
    """Alpaca / LLaVA instruction data.

    Each sample gets ``question`` (the instruction), ``gt_answer`` (the
    response), ``input`` when the Alpaca input is non-empty, ``img_path``
    for LLaVA records (relative paths join ``data_prefix['img_path']``) and
    ``text_only=True`` for Alpaca records.

    A LLaVA record ``{image, conversations: [q1, a1, q2, a2, ...]}`` gives
    one sample per question-answer pair (``turns='all'``): sample ``i``
    asks ``q_i``, is trained on ``a_i`` and carries the earlier turns in
    its ``context`` field, one ``'Human: q'`` / ``'Assistant: a'`` line per
    turn (the model inserts ``context`` as the prompt's input, so turn
    ``i`` sees the whole conversation before it, as multi-turn LLaVA
    training does). Samples also get ``turn`` (0-based) and share the
    record's ``image_id``. ``turns='first'`` keeps only the first pair, as
    the released LLaMA-Adapter V2 finetuning did.

    Args:
        ann_file (str): A JSON list, or a YAML file with ``META: [json, ...]``.
        keep_image_token (bool): Keep the literal ``<image>`` placeholder of
            LLaVA questions, as the released finetuning did. Defaults to True.
        turns (str): ``'all'`` or ``'first'`` (see above). Defaults to
            'all'.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments
            (``data_root``, ``data_prefix``, ``pipeline``, ...).
    """

    def __init__(self,
                 ann_file: str,
                 keep_image_token: bool = True,
                 turns: str = 'all',
                 **kwargs) -> None:
        check_choice('turns', turns, TURN_MODES)
        self.keep_image_token = keep_image_token
        self.turns = turns
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(ann_file=ann_file, **kwargs)

    def load_data_list(self) -> List[dict]:
        prefix = self.data_prefix.get('img_path', '')
        data_list = []
        for path in _ann_files(self.ann_file):
            with open(path) as f:
                records = json.load(f)
            for i, rec in enumerate(records):
                where = f'{path}[{i}]'
                if 'conversations' in rec:
                    data_list.extend(self._parse_llava(rec, prefix, where))
                else:
                    data_list.append(self._parse_alpaca(rec, where))
        return data_list

    def _text(self, turn: dict) -> str:
        text = turn['value']
        if not self.keep_image_token:
            text = text.replace('<image>', '').strip()
        return text

    def _parse_llava(self, rec: dict, prefix: str, where: str) -> List[dict]:
        turns = rec['conversations']
        if len(turns) < 2:
            raise ValueError(f'{where}: a LLaVA record needs a question '
                             'and an answer turn')
        if len(turns) % 2:
            raise ValueError(f'{where}: a LLaVA conversation alternates '
                             'question and answer turns, got an odd number '
                             f'({len(turns)})')
        for j, turn in enumerate(turns):
            speaker = turn.get('from', ('human', 'gpt')[j % 2])
            if speaker != ('human', 'gpt')[j % 2]:
                raise ValueError(
                    f'{where}: turn {j} is from {speaker!r}; LLaVA turns '
                    "alternate 'human' (questions) and 'gpt' (answers)")
        common = dict(image_id=str(rec.get('id', where)))
        if rec.get('image'):
            common['img_path'] = _under_prefix(prefix, rec['image'])
            common['text_only'] = False
        else:
            common['text_only'] = True
        n_pairs = len(turns) // 2 if self.turns == 'all' else 1
        samples, history = [], []
        for k in range(n_pairs):
            question, answer = turns[2 * k], turns[2 * k + 1]
            info = dict(
                common,
                question=self._text(question),
                gt_answer=answer['value'],
                turn=k)
            if history:
                info['context'] = '\n'.join(history)
            samples.append(info)
            history += [
                f"{LLAVA_ROLES['human']}: {self._text(question)}",
                f"{LLAVA_ROLES['gpt']}: {answer['value']}"
            ]
        return samples

    def _parse_alpaca(self, rec: dict, where: str) -> dict:
        if 'instruction' not in rec or 'output' not in rec:
            raise ValueError(f'{where}: expected an Alpaca record '
                             '{instruction, input, output} or a LLaVA record '
                             '{image, conversations}')
        info = dict(
            question=rec['instruction'],
            gt_answer=rec['output'],
            text_only=True,
            image_id=where)
        # an empty input means no input (Alpaca convention,
        # docs/llama_adapter_v2.md#data-formats)
        if isinstance(rec.get('input'), str) and rec['input'].strip():
            info['input'] = rec['input']
        return info


@DATASETS.register_module()
class LLaMAAdapterCaptionTSVDataset(BaseDataset):
    """Image-caption pairs in the released pretraining format.

    Args:
        ann_file (str): A tab-separated file with a header holding ``url``
            (local image path) and ``caption`` columns, or a YAML file with
            ``META: [tsv, ...]``.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments; relative
            ``url`` values join ``data_prefix['img_path']``.
    """

    def __init__(self, ann_file: str, **kwargs) -> None:
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(ann_file=ann_file, **kwargs)

    def load_data_list(self) -> List[dict]:
        prefix = self.data_prefix.get('img_path', '')
        data_list = []
        for path in _ann_files(self.ann_file):
            with open(path, newline='') as f:
                reader = csv.DictReader(f, delimiter='\t')
                if not {'url', 'caption'} <= set(reader.fieldnames or []):
                    raise ValueError(f'{path}: needs url and caption columns,'
                                     f' got {reader.fieldnames}')
                for row in reader:
                    url = _under_prefix(prefix, row['url'])
                    data_list.append(
                        dict(
                            img_path=url,
                            gt_caption=row['caption'],
                            image_id=osp.splitext(osp.basename(url))[0]))
        return data_list


@TRANSFORMS.register_module()
class LoadImageOrBlank:
    """Load ``img_path`` (BGR, like mmcv's ``LoadImageFromFile``) or, when a
    sample has no image, a blank ``size`` x ``size`` image and
    ``text_only=True``.

    Args:
        size (int): Side of the blank image. Defaults to 224.
    """

    def __init__(self, size: int = 224) -> None:
        self.size = size

    def __call__(self, results: dict) -> Optional[dict]:
        import mmcv
        path = results.get('img_path')
        if path:
            img = mmcv.imread(path, channel_order='bgr')
            if img is None:
                raise FileNotFoundError(f'cannot read image {path}')
            results['text_only'] = bool(results.get('text_only', False))
        else:
            img = np.zeros((self.size, self.size, 3), dtype=np.uint8)
            results['text_only'] = True
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(size={self.size})'

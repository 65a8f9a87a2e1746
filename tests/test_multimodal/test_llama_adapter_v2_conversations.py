"""Every turn of a LLaVA conversation is a training sample, with the earlier
turns as context (tests/data/llava/conversations.json, a small LLaVA-Instruct
style file)."""
import json
import os.path as osp

import pytest
from llama_adapter_helpers import build_tiny

DATA = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'llava')
CONVERSATIONS = osp.join(DATA, 'conversations.json')


def _dataset(**kwargs):
    from visionllama_mm.datasets import LLaMAAdapterInstructionDataset
    return LLaMAAdapterInstructionDataset(
        ann_file=CONVERSATIONS,
        data_prefix=dict(img_path='images'),
        lazy_init=False,
        **kwargs)


def _sample(info):
    from mmpretrain.structures import DataSample
    sample = DataSample()
    for k in ('question', 'gt_answer', 'context'):
        if k in info:
            sample.set_field(info[k], k)
    return sample


def test_one_sample_per_turn_with_history():
    with open(CONVERSATIONS) as f:
        records = json.load(f)
    ds = _dataset()
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    # 3 + 1 + 2 question/answer pairs
    assert len(ds) == sum(len(r['conversations']) // 2 for r in records) == 6
    assert [i['turn'] for i in infos] == [0, 1, 2, 0, 0, 1]
    assert [i['image_id'] for i in infos] == \
        ['000000215677'] * 3 + ['000000428310'] + ['000000093437'] * 2
    assert all(i['img_path'] == osp.join('images', records[0]['image'])
               for i in infos[:3])
    assert not any(i['text_only'] for i in infos)
    turns = records[0]['conversations']
    # the first turn has no context, later turns carry all earlier turns
    assert 'context' not in infos[0]
    assert infos[0]['question'] == turns[0]['value']
    assert infos[2]['question'] == turns[4]['value']
    assert infos[2]['gt_answer'] == turns[5]['value']
    assert infos[2]['context'] == '\n'.join([
        'Human: ' + turns[0]['value'], 'Assistant: ' + turns[1]['value'],
        'Human: ' + turns[2]['value'], 'Assistant: ' + turns[3]['value']
    ])
    assert infos[1]['context'] == infos[2]['context'].rsplit('\nHuman: ', 1)[0]


def test_prompt_of_a_later_turn_holds_the_conversation():
    ds = _dataset(keep_image_token=False)
    model = build_tiny(task='chat')
    info = ds.get_data_info(1)
    prompt = model.build_prompt(_sample(info))
    assert prompt == (
        'Below is an instruction that describes a task, paired with an input '
        'that provides further context. Write a response that appropriately '
        'completes the request.\n\n### Instruction:\nWhere is the cat '
        'resting?\n\n### Input:\nHuman: What animal is shown in the picture?'
        '\nAssistant: The picture shows a tabby cat with orange and brown '
        'striped fur, lying down and looking to the side.\n\n### Response:')
    assert model.build_target(_sample(info)) == info['gt_answer']
    # the first turn keeps the plain instruction template
    first = model.build_prompt(_sample(ds.get_data_info(0)))
    assert '### Input:' not in first


def test_first_turn_only_and_bad_records(tmp_path):
    ds = _dataset(turns='first')
    assert len(ds) == 3
    assert all(ds.get_data_info(i)['turn'] == 0 for i in range(3))
    with pytest.raises(ValueError, match='turns must be one of'):
        _dataset(turns='last')
    bad = tmp_path / 'bad.json'
    odd = [
        dict(
            image='a.png',
            conversations=[dict(value='q'),
                           dict(value='a'),
                           dict(value='q2')])
    ]
    bad.write_text(json.dumps(odd))
    from visionllama_mm.datasets import LLaMAAdapterInstructionDataset
    with pytest.raises(ValueError, match='odd number'):
        LLaMAAdapterInstructionDataset(ann_file=str(bad))
    swapped = [
        dict(conversations=[
            dict({'from': 'gpt'}, value='a'),
            dict({'from': 'human'}, value='q')
        ])
    ]
    bad.write_text(json.dumps(swapped))
    with pytest.raises(ValueError, match="turn 0 is from 'gpt'"):
        LLaMAAdapterInstructionDataset(ann_file=str(bad))

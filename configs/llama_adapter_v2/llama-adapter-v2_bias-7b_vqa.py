# LLaMA-Adapter V2 multimodal, released BIAS-7B adapter, VQAv2 (val).
# Short answers: greedy decoding and the MME-style short-answer template.
_base_ = './llama-adapter-v2_bias-7b_caption.py'

model = dict(
    task='vqa',
    prompt_tmpl=dict(
        no_input='Below is an instruction that describes a task. Write a '
        'response that appropriately completes the request using a single '
        'word or phrase.\n\n### Instruction:\n{instruction}\n\n'
        '### Response:'),
    generation_cfg=dict(max_new_tokens=30, temperature=0.0, top_p=0.75))

test_pipeline = [
    *_base_.test_pipeline[:-1],
    dict(
        type='PackInputs',
        algorithm_keys=['question', 'gt_answer', 'gt_answer_weight'],
        meta_keys=['question_id', 'image_id']),
]

test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='COCOVQA',
        data_root='data/coco',
        data_prefix='val2014',
        question_file='annotations/v2_OpenEnded_mscoco_val2014_questions.json',
        ann_file='annotations/v2_mscoco_val2014_annotations.json',
        pipeline=test_pipeline))
test_evaluator = dict(_delete_=True, type='VQAAcc')

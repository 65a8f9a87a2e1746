"""tools/analysis_tools/compare_with_paper.py against fixture results."""
import json
import os
import os.path as osp

import pytest
from zoo_utils import DATA, INDEX, ROOT, load_tool

cwp = load_tool('tools/analysis_tools/compare_with_paper.py')

FIX_INDEX = osp.join(DATA, 'model-index.yml')
RESULTS = osp.join(DATA, 'results')
TOY = osp.join(DATA, 'configs', 'toy', 'toy-vit_in1k.py')
WIDE = osp.join(DATA, 'configs', 'toy', 'toy-vit-wide_in1k.py')


def run(*args):
    return cwp.main(['--model-index', FIX_INDEX] + list(args))


def test_prints_expected_obtained_and_difference(capsys):
    assert run(TOY, osp.join(RESULTS, 'cls_metrics.json')) == 0
    out = capsys.readouterr().out
    assert 'Model: toy-vit_in1k' in out
    row = next(line for line in out.splitlines()
               if line.startswith('ImageNet-1k') and 'Top 1' in line)
    assert row.split()[-3:] == ['84.00', '83.87', '-0.13']
    # a metric without a paper number shows the obtained value only
    row5 = next(line for line in out.splitlines() if 'Top 5' in line)
    assert row5.split()[-3:] == ['-', '96.62', '-']


def test_missing_metric_exits_non_zero(capsys):
    # the wide model also lists MME Perception, absent from this file
    assert run(WIDE, osp.join(RESULTS, 'cls_metrics.json')) == 1
    captured = capsys.readouterr()
    assert 'missing in' in captured.err and 'Perception' in captured.err
    # unverified numbers are starred
    assert 'Top 1 Accuracy *' in captured.out
    assert 'Note: a recalled number' in captured.out


def test_dataset_filter_and_tolerance(capsys):
    result = osp.join(RESULTS, 'cls_metrics.json')
    assert run(WIDE, result, '--dataset', 'ImageNet-1k') == 0
    assert run(WIDE, result, '--dataset', 'ImageNet-1k', '--tolerance',
               '1.0') == 1  # 83.87 vs 50.5
    assert run(TOY, result, '--tolerance', '0.2') == 0
    assert run(TOY, result, '--tolerance', '0.1') == 1


def test_json_lines_and_nested_results(capsys):
    # mmengine scalars: the last line with metrics; MME key with prefix
    assert run(WIDE, osp.join(RESULTS, 'scalars.json')) == 0
    out = capsys.readouterr().out
    assert '1300.50' in out and '-25.59' in out
    # nested objects are flattened with '/'
    metrics = cwp.load_result(osp.join(RESULTS, 'mme.json'))
    assert metrics == {'MME/Perception': 1320.0, 'MME/Cognition': 350.0}
    assert cwp.lookup(metrics, 'Cognition') == 350.0


def test_folder_of_test_runs_uses_newest_metrics(tmp_path, capsys):
    old = tmp_path / '20240101_000000'
    new = tmp_path / '20240102_000000'
    for d, top1 in ((old, 10.0), (new, 84.5)):
        d.mkdir()
        (d / 'metrics.json').write_text(json.dumps({'accuracy/top1': top1}))
    os.utime(old / 'metrics.json', (1, 1))
    assert run(TOY, str(tmp_path)) == 0
    assert '+0.50' in capsys.readouterr().out


def test_library_keys_are_mapped_and_scaled():
    det = cwp.load_result(osp.join(RESULTS, 'det_metrics.json'))
    assert cwp.lookup(det, 'box AP') == pytest.approx(49.1)
    assert cwp.lookup(det, 'mask AP') == pytest.approx(43.7)
    assert cwp.lookup({'mIoU': 49.3}, 'mIoU') == 49.3
    assert cwp.lookup({'VQA/acc': 70.1}, 'Accuracy') == 70.1
    assert cwp.lookup({'Bleu_4': 0.362}, 'BLEU-4') == pytest.approx(36.2)
    assert cwp.lookup({'FID': 2.5}, 'FID-50k') == 2.5
    assert cwp.lookup({'accuracy/top1': 1.0}, 'mIoU') is None
    entry = dict(
        name='x',
        metadata=dict(Unverified=['box AP']),
        results=[
            dict(
                Dataset='COCO',
                Task='Object Detection',
                Metrics={'box AP': 49.1}),
            dict(
                Dataset='COCO',
                Task='Instance Segmentation',
                Metrics={'mask AP': 43.8})
        ])
    rows = cwp.compare(entry, det)
    assert [(r['metric'], r['unverified']) for r in rows] == \
        [('box AP', True), ('mask AP', False)]
    assert rows[0]['diff'] == pytest.approx(0.0)
    assert rows[1]['diff'] == pytest.approx(-0.1)


def test_unknown_config_exits_2(capsys):
    assert run('configs/nope.py', osp.join(RESULTS, 'cls_metrics.json')) == 2


def test_config_matched_by_file_name(tmp_path, capsys):
    # e.g. the copy tools/train.py dumps into the work dir
    copy = tmp_path / 'toy-vit_in1k.py'
    copy.write_text(open(TOY).read())
    assert run(str(copy), osp.join(RESULTS, 'cls_metrics.json')) == 0


@pytest.mark.skipif(
    not osp.isfile(osp.join(ROOT, 'configs', 'visionllama', 'metafile.yml')),
    reason='needs the repository metafiles')
def test_repository_entry(tmp_path, capsys):
    cfg = osp.join(
        ROOT, 'configs', 'visionllama',
        'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-'
        '100e_in1k.py')
    result = tmp_path / 'metrics.json'
    result.write_text(json.dumps({'accuracy/top1': 83.9}))
    assert cwp.main(['--model-index', INDEX, cfg, str(result)]) == 0
    assert '84.00' in capsys.readouterr().out

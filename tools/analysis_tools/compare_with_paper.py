"""Compare a test run's metrics with the numbers the metafiles expect.

Usage::

    python tools/test.py CONFIG CHECKPOINT --work-dir work_dirs/x
    python tools/analysis_tools/compare_with_paper.py CONFIG \
        work_dirs/x/<timestamp>/metrics.json

``RESULT`` is what ``tools/test.py`` writes (``<work_dir>/<timestamp>/
metrics.json``, a flat JSON object), a folder holding it (the newest
``metrics.json`` below it is used), an mmengine scalar log
(``vis_data/scalars.json``, JSON lines: the last line with metrics wins), or
any JSON object of metrics (nested objects are flattened with ``/``), e.g.
``{"FID-50k": 2.5}`` written by hand for the DiT FID or
``{"MME/Perception": 1320.1, ...}`` for MME.

The metafile entry is the one whose ``Config`` is CONFIG (same file, else
same file name). For every metric it lists, the tool prints the expected
value, the obtained one and the difference; metrics the spec flags as
unverified are marked ``*``. Library metric names are mapped to metafile
names (``accuracy/top1`` -> ``Top 1 Accuracy``, ``coco/bbox_mAP`` x 100 ->
``box AP``, ...; see :data:`METRIC_KEYS`).

Exit status: 0 when every listed metric with an expected value was found
(and, with ``--tolerance``, is within it); 1 when one is missing (or out
of tolerance); 2 when no metafile entry names CONFIG.
"""
import argparse
import glob
import json
import math
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: Metafile metric name -> [(result key, scale)], first found wins. Keys are
#: matched exactly, then case-insensitively, then as the last ``/`` part.
METRIC_KEYS: Dict[str, List[Tuple[str, float]]] = {
    'Top 1 Accuracy': [('accuracy/top1', 1.), ('top1', 1.)],
    'Top 5 Accuracy': [('accuracy/top5', 1.), ('top5', 1.)],
    'mIoU': [('mIoU', 1.)],
    'mAcc': [('mAcc', 1.)],
    'aAcc': [('aAcc', 1.)],
    'box AP': [('coco/bbox_mAP', 100.), ('bbox_mAP', 100.)],
    'mask AP': [('coco/segm_mAP', 100.), ('segm_mAP', 100.)],
    'FID-50k': [('FID-50k', 1.), ('FID-Full-50k/fid', 1.), ('FID', 1.)],
    'Accuracy': [('VQA/acc', 1.), ('acc', 1.)],
    'BLEU-4': [('coco-caption/Bleu_4', 100.), ('Bleu_4', 100.)],
    'CIDER': [('coco-caption/CIDEr', 100.), ('CIDEr', 100.)],
    'Perception': [('MME/Perception', 1.)],
    'Cognition': [('MME/Cognition', 1.)],
}


def load_result(path: str) -> Dict[str, float]:
    """Flat {name: value} of the numeric metrics in a result file.

    Args:
        path (str): A JSON / JSON-lines file, or a folder holding
            ``metrics.json`` files (the newest is used).

    Returns:
        dict: Metric name -> float.
    """
    if osp.isdir(path):
        found = glob.glob(osp.join(path, '**', 'metrics.json'), recursive=True)
        if not found:
            raise FileNotFoundError(f'no metrics.json under {path}')
        path = max(found, key=osp.getmtime)
    with open(path) as f:
        text = f.read()
    try:
        records = [json.loads(text)]
    except json.JSONDecodeError:
        # JSON lines (mmengine scalars.json / <timestamp>.json)
        records = [json.loads(line) for line in text.splitlines() if line]
    metrics: Dict[str, float] = {}
    for record in records:
        flat = _flatten(record)
        flat = {
            k: v
            for k, v in flat.items() if k not in ('step', 'epoch', 'iter')
        }
        if flat:
            metrics = flat  # the last record with metrics wins
    return metrics


def _flatten(obj, prefix='') -> Dict[str, float]:
    out = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_flatten(value, f'{prefix}{key}/'))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = float(obj)
    return out


def lookup(metrics: Dict[str, float], name: str) -> Optional[float]:
    """The obtained value of metafile metric ``name``, in its units."""
    candidates = METRIC_KEYS.get(name, []) + [(name, 1.)]
    lower = {k.lower(): v for k, v in metrics.items()}
    tails = {}
    for key, value in metrics.items():
        tails.setdefault(key.split('/')[-1].lower(), value)
    for key, scale in candidates:
        if key in metrics:
            return metrics[key] * scale
    for key, scale in candidates:
        if key.lower() in lower:
            return lower[key.lower()] * scale
    for key, scale in candidates:
        if key.split('/')[-1].lower() in tails:
            return tails[key.split('/')[-1].lower()] * scale
    return None


def find_entries(config: str, records: List[dict]) -> List[dict]:
    """Metafile models whose Config is ``config`` (path, else file name)."""
    real = osp.realpath(config)
    same = [
        r for r in records if r['config'] and osp.realpath(r['config']) == real
    ]
    if same:
        return same
    base = osp.basename(config)
    return [
        r for r in records if r['config'] and osp.basename(r['config']) == base
    ]


def compare(entry: dict,
            metrics: Dict[str, float],
            datasets: Optional[List[str]] = None) -> List[dict]:
    """Rows (dataset, metric, expected, obtained, diff, unverified)."""
    flag = entry['metadata'].get('Unverified')
    all_unverified = flag is True
    unverified = [flag] if isinstance(flag, str) else \
        list(flag) if isinstance(flag, (list, tuple)) else []
    rows = []
    for result in entry['results']:
        if datasets and result.get('Dataset') not in datasets:
            continue
        for name, expected in (result.get('Metrics') or {}).items():
            obtained = lookup(metrics, name)
            diff = None
            if expected is not None and obtained is not None:
                diff = obtained - float(expected)
            rows.append(
                dict(
                    dataset=result.get('Dataset'),
                    metric=name,
                    expected=expected,
                    obtained=obtained,
                    diff=diff,
                    unverified=all_unverified or name in unverified))
    return rows


def _fmt(value) -> str:
    if value is None:
        return '-'
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f'{float(value):.2f}'


def print_table(entry: dict, rows: List[dict], out=None) -> None:
    out = out or sys.stdout
    print(f'Model: {entry["name"]}', file=out)
    if entry['metadata'].get('Note'):
        print(f'Note: {entry["metadata"]["Note"]}', file=out)
    header = ('Dataset', 'Metric', 'Expected', 'Obtained', 'Diff')
    table = [header]
    for row in rows:
        diff = row['diff']
        table.append((str(row['dataset']),
                      row['metric'] + (' *' if row['unverified'] else ''),
                      _fmt(row['expected']), _fmt(row['obtained']),
                      '-' if diff is None else f'{diff:+.2f}'))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print(
            '  '.join(
                c.ljust(w) if j < 2 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths))),
            file=out)
        if i == 0:
            print('  '.join('-' * w for w in widths), file=out)
    if any(r['unverified'] for r in rows):
        print(
            '* unverified paper value (see the metafile note); check the '
            'paper before quoting',
            file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Compare test metrics with the metafile (paper) numbers')
    parser.add_argument('config', help='the config that was tested')
    parser.add_argument(
        'result',
        help='metrics.json written by tools/test.py (or a folder holding '
        'it, or a JSON / JSON-lines file of metrics)')
    parser.add_argument(
        '--model-index',
        help='model-index.yml (default: the repository / package one)')
    parser.add_argument(
        '--dataset',
        nargs='+',
        help='compare only the results on these datasets (e.g. MME)')
    parser.add_argument(
        '--tolerance',
        type=float,
        help='also fail when |obtained - expected| exceeds this')
    args = parser.parse_args(argv)

    from visionllama_mm.zoo import model_records
    records = model_records(args.model_index)
    entries = find_entries(args.config, records)
    if not entries:
        print(
            f'no metafile entry has Config {args.config}; see '
            '`python -m visionllama_mm.zoo list`',
            file=sys.stderr)
        return 2
    metrics = load_result(args.result)
    status = 0
    for entry in entries:
        rows = compare(entry, metrics, args.dataset)
        if not any(r['expected'] is not None for r in rows):
            print(f'Model: {entry["name"]}: the metafile lists no expected '
                  'numbers for this config (no published result)')
            continue
        print_table(entry, rows)
        missing = [
            r['metric'] for r in rows
            if r['expected'] is not None and r['obtained'] is None
        ]
        if missing:
            print(
                f'missing in {args.result}: {", ".join(missing)} '
                f'(available: {", ".join(sorted(metrics)) or "none"})',
                file=sys.stderr)
            status = 1
        if args.tolerance is not None:
            off = [
                r['metric'] for r in rows
                if r['diff'] is not None and abs(r['diff']) > args.tolerance
            ]
            if off:
                print(
                    f'outside the tolerance {args.tolerance}: '
                    f'{", ".join(off)}',
                    file=sys.stderr)
                status = 1
    return status


if __name__ == '__main__':
    sys.exit(main())

"""The model zoo of visionllama_mm: the model index and its metafiles.

``model-index.yml`` (top level, linked into ``visionllama_mm/.mim`` by an
editable install and copied into wheels) imports one ``metafile.yml`` per
config family. This module reads it with ``modelindex`` (the library
OpenMMLab's ``mim`` uses), lists the models and registers the mmpretrain
ones with ``mmpretrain.get_model`` / ``list_models``; their ``Weights`` are
the released files, which load (and convert) through mmengine's checkpoint
loading, so ``get_model(name, pretrained=True)`` gives the official model.

Command line (works offline, without ``mim``)::

    python -m visionllama_mm.zoo list [PATTERN] [--task TASK] [--json]
    python -m visionllama_mm.zoo show NAME

Importing this module imports neither mmpretrain nor the other OpenMMLab
libraries; :func:`register_mmpretrain_models` imports mmpretrain.
"""
import argparse
import fnmatch
import json
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional

__all__ = [
    'MMPRETRAIN_TASKS', 'find_model_index', 'load_model_index',
    'model_records', 'list_models', 'register_mmpretrain_models'
]

#: ``Results.Task`` values that mmpretrain's inferencers understand.
MMPRETRAIN_TASKS = ('Image Classification', 'Image Caption',
                    'Visual Question Answering')

_PKG_DIR = osp.dirname(osp.abspath(__file__))
_registered: Dict[str, bool] = {}


def find_model_index() -> str:
    """Path of ``model-index.yml``.

    Looks in ``visionllama_mm/.mim`` (installed package) and then in the
    source checkout that contains the package.

    Returns:
        str: The path.

    Raises:
        FileNotFoundError: If neither exists.
    """
    candidates = [
        osp.join(_PKG_DIR, '.mim', 'model-index.yml'),
        osp.join(osp.dirname(_PKG_DIR), 'model-index.yml'),
    ]
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        'model-index.yml not found in ' + ' or '.join(candidates) +
        '; install the package with `pip install -e .` (or `mim install -e '
        '.`) from a source checkout')


def _config_root(index_path: str) -> str:
    """The folder the ``Config`` paths of the metafiles are relative to."""
    # model-index.yml sits next to configs/ (top level, or .mim/).
    return osp.dirname(osp.realpath(index_path))


def load_model_index(path: Optional[str] = None):
    """Load the model index with ``modelindex``.

    Args:
        path (str, optional): ``model-index.yml``. Defaults to
            :func:`find_model_index`.

    Returns:
        modelindex.models.ModelIndex.ModelIndex: Models carry their
        collection's fields (``build_models_with_collections``).
    """
    from modelindex.load_model_index import load
    path = path or find_model_index()
    index = load(str(path))
    index.build_models_with_collections()
    return index


def _plain(value):
    """modelindex objects -> plain python (dict / list / scalars)."""
    data = getattr(value, 'data', value)
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


def model_records(path: Optional[str] = None) -> List[dict]:
    """Every model of the index as a plain dict.

    Args:
        path (str, optional): ``model-index.yml``. Defaults to
            :func:`find_model_index`.

    Returns:
        list[dict]: Keys ``name``, ``collection``, ``config`` (absolute
        path), ``weights``, ``metadata`` (dict), ``results`` (list of dicts
        with ``Task``, ``Dataset``, ``Metrics``), ``tasks`` (list).
    """
    path = path or find_model_index()
    root = _config_root(path)
    records = []
    for model in load_model_index(path).models:
        results = [_plain(r) for r in (model.results or [])]
        config = model.config
        if config is not None and not osp.isabs(config):
            config = osp.join(root, config)
        records.append(
            dict(
                name=model.name,
                collection=model.in_collection,
                config=config,
                weights=model.weights,
                metadata=_plain(model.metadata) or {},
                results=results,
                tasks=sorted({r.get('Task')
                              for r in results if r.get('Task')})))
    return records


def list_models(pattern: Optional[str] = None,
                task: Optional[str] = None,
                path: Optional[str] = None) -> List[str]:
    """Names of the models in the index.

    Args:
        pattern (str, optional): fnmatch pattern on the name (a bare word
            matches as a substring). Defaults to all.
        task (str, optional): Keep models with a result of this task.
            Defaults to all.
        path (str, optional): ``model-index.yml``. Defaults to
            :func:`find_model_index`.

    Returns:
        list[str]: Sorted names.
    """
    names = []
    for rec in model_records(path):
        if pattern is not None:
            pat = pattern if any(c in pattern for c in '*?[') else \
                f'*{pattern}*'
            if not fnmatch.fnmatch(rec['name'], pat):
                continue
        if task is not None and task not in rec['tasks']:
            continue
        names.append(rec['name'])
    return sorted(names)


def _is_mmpretrain_model(rec: dict) -> bool:
    """Whether mmpretrain's ``get_model`` can build the model."""
    if rec['tasks']:
        return all(t in MMPRETRAIN_TASKS for t in rec['tasks'])
    # No results (pretraining / training-only entries): decided by the
    # config's default scope.
    if not rec['config'] or not osp.isfile(rec['config']):
        return False
    from mmengine.config import Config
    cfg = Config.fromfile(rec['config'])
    return cfg.get('default_scope', None) == 'mmpretrain'


def register_mmpretrain_models(path: Optional[str] = None) -> List[str]:
    """Expose the mmpretrain models of the index to mmpretrain.

    After the call ``mmpretrain.list_models('*visionllama*')`` lists them
    and ``mmpretrain.get_model(name)`` builds them from their config. The
    models registered are those whose results are all mmpretrain tasks
    (:data:`MMPRETRAIN_TASKS`) and result-less entries whose config has
    ``default_scope='mmpretrain'`` (e.g. MAE pretraining). Segmentation,
    detection and generation models are left out: ``get_model`` builds in
    mmpretrain's scope only. Also registers safe checkpoint loading
    (:func:`visionllama_mm.compat.register_safe_loading`). Calling it again
    is a no-op.

    Args:
        path (str, optional): ``model-index.yml``. Defaults to
            :func:`find_model_index`.

    Returns:
        list[str]: The names registered (lower case, as mmpretrain keys
        them).
    """
    import yaml
    from mmpretrain.apis import ModelHub

    from visionllama_mm.compat import register_safe_loading

    # get_model(name, pretrained=True) reads (and converts) the released
    # files through mmengine's checkpoint loading
    register_safe_loading()
    path = osp.realpath(path or find_model_index())
    if _registered.get(path):
        return []
    # ModelHub registers mmpretrain's own index lazily; do it first so that
    # its later call does not clash with ours.
    ModelHub._register_mmpretrain_models()
    root = _config_root(path)
    models = []
    for rec in model_records(path):
        if ModelHub.has(rec['name'].lower()):
            continue
        if not _is_mmpretrain_model(rec):
            continue
        entry = dict(Name=rec['name'], Config=rec['config'])
        if rec['collection']:
            entry['In Collection'] = rec['collection']
        # The released files load as they are: mmengine's checkpoint
        # loading converts their layout (visionllama_mm.weights), so
        # get_model(name, pretrained=True) downloads and converts them.
        if rec['weights']:
            entry['Weights'] = rec['weights']
        if rec['metadata']:
            entry['Metadata'] = rec['metadata']
        if rec['results']:
            entry['Results'] = rec['results']
        models.append(entry)
    # ModelHub.register_model_index takes a file: write the selection.
    with tempfile.TemporaryDirectory() as tmp:
        sub = osp.join(tmp, 'model-index.yml')
        with open(sub, 'w') as f:
            yaml.safe_dump(dict(Models=models), f, sort_keys=False)
        ModelHub.register_model_index(sub, config_prefix=root)
    _registered[path] = True
    return sorted(m['Name'].lower() for m in models)


def _format_metrics(rec: dict) -> str:
    parts = []
    for res in rec['results']:
        for key, value in (res.get('Metrics') or {}).items():
            if value is not None:
                parts.append(f'{res.get("Dataset")} {key} {value}')
    return '; '.join(parts)


def main(argv=None) -> int:
    """``python -m visionllama_mm.zoo``: list / show the models."""
    parser = argparse.ArgumentParser(
        prog='python -m visionllama_mm.zoo',
        description='List the models of the visionllama_mm model index '
        '(offline equivalent of `mim search visionllama_mm`).')
    parser.add_argument(
        '--model-index', help='model-index.yml (default: the package one)')
    sub = parser.add_subparsers(dest='command', required=True)
    p_list = sub.add_parser('list', help='list the models')
    p_list.add_argument('pattern', nargs='?', help='name pattern')
    p_list.add_argument('--task', help='e.g. "Image Classification"')
    p_list.add_argument('--json', action='store_true', help='JSON records')
    p_show = sub.add_parser('show', help='one model in full (JSON)')
    p_show.add_argument('name')
    args = parser.parse_args(argv)

    records = {r['name']: r for r in model_records(args.model_index)}
    if args.command == 'show':
        rec = records.get(args.name)
        if rec is None:
            print(f'no model named {args.name!r}; see `list`', file=sys.stderr)
            return 1
        print(json.dumps(rec, indent=2))
        return 0
    names = list_models(args.pattern, args.task, args.model_index)
    if args.json:
        print(json.dumps([records[n] for n in names], indent=2))
        return 0
    cwd = os.getcwd()
    for name in names:
        rec = records[name]
        config = rec['config'] or ''
        if config.startswith(cwd + os.sep):
            config = osp.relpath(config, cwd)
        print(f'{name}\n    collection: {rec["collection"]}\n'
              f'    config: {config}')
        if rec['weights']:
            print(f'    weights: {rec["weights"]}')
        metrics = _format_metrics(rec)
        if metrics:
            print(f'    results: {metrics}')
    print(f'{len(names)} model(s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Dump every shipped config in its resolved form, and check the snapshot.

A refactor of the configs (moving values into a ``_base_``, renaming a
variable, sharing a pipeline) must not change what the runner receives. This
tool resolves each config under ``configs/`` (inheritance, ``_delete_``,
``mmpretrain::`` / ``mmdet::`` / ``mmseg::`` bases, variables) with
``mmengine.Config.fromfile`` and writes it as one line per leaf value::

    model.backbone.arch = 'base'
    model.data_preprocessor.mean[0] = 123.675
    train_dataloader.dataset.pipeline[1].scale(0) = 224

(``[i]`` indexes a list, ``(i)`` a tuple; dict keys are sorted; the
repository path is written as ``<repo>``). The snapshot lives in
``tests/data/resolved_configs/`` (one ``.txt`` per config, mirroring
``configs/``) and ``tests/test_configs/test_resolved_configs.py`` compares
it with the configs on every test run.

Usage::

    python tools/misc/dump_resolved_configs.py            # check, exit 1 on
                                                          # a difference
    python tools/misc/dump_resolved_configs.py --update   # rewrite snapshot

Run ``--update`` only for a change that is meant to change a resolved
config, and commit the snapshot with it: the diff of the ``.txt`` files is
the review of what the change does to the runs.
"""
import argparse
import contextlib
import difflib
import glob
import os
import os.path as osp
import sys
from typing import Any, Dict, Iterator, List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SNAPSHOT_DIR = osp.join('tests', 'data', 'resolved_configs')
UPDATE_COMMAND = 'python tools/misc/dump_resolved_configs.py --update'


def shipped_configs(root: str = ROOT) -> List[str]:
    """Paths (relative to ``root``) of the configs users run: every ``.py``
    under ``configs/`` outside ``_base_`` folders, sorted."""
    found = glob.glob(osp.join(root, 'configs', '**', '*.py'), recursive=True)
    return sorted(
        osp.relpath(p, root) for p in found
        if '_base_' not in osp.relpath(p, root).split(osp.sep))


def _leaf(value: Any, root: str) -> str:
    if isinstance(value, str):
        return repr(value.replace(root, '<repo>'))
    if callable(value) and hasattr(value, '__qualname__'):
        return f'<{value.__module__}.{value.__qualname__}>'
    return repr(value)


def _flatten(node: Any, path: str, root: str, out: List[str]) -> None:
    if isinstance(node, dict):
        if not node:
            out.append(f'{path} = {{}}')
        for key in sorted(node, key=str):
            _flatten(node[key], f'{path}.{key}' if path else str(key), root,
                     out)
    elif isinstance(node, (list, tuple)):
        open_, close = ('(', ')') if isinstance(node, tuple) else ('[', ']')
        if not node:
            out.append(f'{path} = {open_}{close}')
        for i, value in enumerate(node):
            _flatten(value, f'{path}{open_}{i}{close}', root, out)
    else:
        out.append(f'{path} = {_leaf(node, root)}')


def resolved_text(config: str, root: str = ROOT) -> str:
    """The resolved form of one config, one ``key = value`` line per leaf.

    Args:
        config (str): The config path, relative to ``root`` or absolute.
        root (str): The repository root, written as ``<repo>``.

    Returns:
        str: The text, ending with a newline.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(root, config))
    lines: List[str] = []
    _flatten(cfg.to_dict(), '', root, lines)
    return '\n'.join(lines) + '\n'


@contextlib.contextmanager
def _memoised_metafile_lookup() -> Iterator[None]:
    """Memoise mmengine's lookup of ``package::name`` configs while dumping.

    For every ``mmpretrain::`` (``mmdet::``, ...) base, mmengine parses all
    of the package's metafiles again (thousands of YAML files for one
    config), and for a ``_base_`` file only to learn that it has no entry
    (``ValueError``, then mmengine takes the path as it is). The answer
    depends only on the installed package, so one lookup per name is
    enough. The original function is restored on exit.
    """
    from mmengine.config import config as config_module
    original = config_module._get_external_cfg_path
    answers: Dict[tuple, tuple] = {}

    def lookup(package_path: str, cfg_file: str) -> str:
        key = (package_path, cfg_file)
        if key not in answers:
            try:  # a ``_base_`` file has no metafile entry: ValueError
                answers[key] = (original(package_path, cfg_file), None)
            except ValueError as exc:
                answers[key] = (None, exc)
        path, error = answers[key]
        if error is not None:
            raise error
        return path

    config_module._get_external_cfg_path = lookup
    try:
        yield
    finally:
        config_module._get_external_cfg_path = original


def dump_all(root: str = ROOT) -> Dict[str, str]:
    """``{config path: resolved text}`` for :func:`shipped_configs`."""
    with _memoised_metafile_lookup():
        return {c: resolved_text(c, root) for c in shipped_configs(root)}


def _snapshot_path(config: str, root: str) -> str:
    rel = osp.relpath(config, 'configs')
    return osp.join(root, SNAPSHOT_DIR, osp.splitext(rel)[0] + '.txt')


def read_snapshot(root: str = ROOT) -> Dict[str, str]:
    """``{config path: text}`` as committed in :data:`SNAPSHOT_DIR`."""
    base = osp.join(root, SNAPSHOT_DIR)
    snapshot = {}
    for path in sorted(
            glob.glob(osp.join(base, '**', '*.txt'), recursive=True)):
        config = osp.join('configs',
                          osp.splitext(osp.relpath(path, base))[0] + '.py')
        with open(path, encoding='utf-8') as f:
            snapshot[config] = f.read()
    return snapshot


def write_snapshot(dumps: Dict[str, str], root: str = ROOT) -> None:
    """Replace :data:`SNAPSHOT_DIR` with ``dumps``."""
    for config in set(read_snapshot(root)) - set(dumps):
        os.remove(_snapshot_path(config, root))
    for config, text in dumps.items():
        path = _snapshot_path(config, root)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)


def compare(dumps: Dict[str, str],
            snapshot: Dict[str, str],
            max_lines: int = 12) -> List[str]:
    """Describe how ``dumps`` differ from ``snapshot``.

    Returns:
        list[str]: One entry per changed, new or removed config (with the
        first differing lines); empty when they are identical.
    """
    problems = []
    for config in sorted(set(dumps) | set(snapshot)):
        if config not in snapshot:
            problems.append(f'{config}: new config, not in the snapshot')
        elif config not in dumps:
            problems.append(f'{config}: in the snapshot, but the config is '
                            'gone')
        elif dumps[config] != snapshot[config]:
            diff = [
                line for line in difflib.unified_diff(
                    snapshot[config].splitlines(),
                    dumps[config].splitlines(),
                    lineterm='',
                    n=0) if line[:1] in '+-' and line[:3] not in ('---', '+++')
            ]
            shown = '\n'.join('    ' + line for line in diff[:max_lines])
            more = len(diff) - max_lines
            if more > 0:
                shown += f'\n    ... {more} more changed lines'
            problems.append(f'{config}: resolved config changed '
                            f'(- snapshot, + now):\n{shown}')
    return problems


def failure_message(problems: List[str]) -> str:
    """The report of :func:`compare` with how to accept the change."""
    return (f'{len(problems)} shipped config(s) resolve differently from the '
            f'snapshot in {SNAPSHOT_DIR}/:\n' + '\n'.join(problems) +
            '\nIf the change is intended, regenerate the snapshot with '
            f'`{UPDATE_COMMAND}` and commit it with the change.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Check (or --update) the snapshot of the resolved '
        'shipped configs.')
    parser.add_argument(
        '--update',
        action='store_true',
        help=f'rewrite {SNAPSHOT_DIR}/ from the current configs')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dumps = dump_all()
    if args.update:
        write_snapshot(dumps)
        print(f'Wrote {len(dumps)} resolved configs to {SNAPSHOT_DIR}/.')
        return 0
    problems = compare(dumps, read_snapshot())
    if problems:
        print(failure_message(problems))
        return 1
    print(f'All {len(dumps)} resolved configs equal the snapshot.')
    return 0


if __name__ == '__main__':
    sys.exit(main())

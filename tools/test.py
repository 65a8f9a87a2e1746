"""Evaluate a checkpoint on a config's test set with mmengine's Runner.

Works with configs of any OpenMMLab library (mmpretrain, mmseg, mmdet,
mmagic) and with this package's configs. Examples::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]
    python tools/test.py CONFIG CHECKPOINT --out results.pkl --show-dir vis
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [ARGS]

The metrics are printed, logged and written as JSON to
``<work_dir>/<timestamp>/metrics.json`` (the tool prints the path).
The checkpoint is loaded with ``weights_only=True`` and an allow-list
(:func:`visionllama_mm.compat.register_safe_loading`, called first), released
layouts are converted while loading, and the load is strict: a checkpoint
that does not fill every tensor of the model, or holds tensors the model does
not have, is an error (see :mod:`visionllama_mm.weights`).
"""
import argparse
import inspect
import json
import numbers
import os.path as osp
import sys

from mmengine.config import Config, ConfigDict
from mmengine.dist import is_main_process
from mmengine.evaluator import DumpResults
from mmengine.registry import HOOKS

from visionllama_mm.compat import register_safe_loading, setup_cpu_distributed
from visionllama_mm.weights import strict_load

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:  # runner_args.py, when loaded by path
    sys.path.insert(0, TOOLS_DIR)
import runner_args  # noqa: E402

METRICS_FILE = 'metrics.json'


def parse_args(argv=None):
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory for logs and metrics.json; defaults to '
        './work_dirs/<config name>')
    parser.add_argument(
        '--out',
        help='dump the predictions to this pickle file (.pkl / .pickle)')
    parser.add_argument(
        '--show-dir',
        help='save the drawn predictions to this directory (needs a '
        '`visualization` hook in default_hooks)')
    parser.add_argument(
        '--show', action='store_true', help='show the predictions')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='seconds each image is shown with --show')
    parser.add_argument(
        '--interval',
        type=int,
        default=1,
        help='draw every N-th test sample with --show / --show-dir')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation (needs `tta_model` and `tta_pipeline` '
        'in the config)')
    runner_args.add_launcher_args(parser, 'test_dataloader.batch_size=1')
    args = runner_args.parse_launcher_args(parser, argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error('--out must end with .pkl or .pickle')
    return args


def _hook_class(cfg, hook_type):
    """The class a hook config names, looked up in the config's scope."""
    if isinstance(hook_type, type):
        return hook_type
    scope = cfg.get('default_scope', None) or 'mmengine'
    with HOOKS.switch_scope_and_registry(scope) as registry:
        hook_cls = registry.get(hook_type)
    if hook_cls is None:
        raise ValueError(f'Unknown visualization hook type {hook_type!r} in '
                         f'scope {scope!r}')
    return hook_cls


def enable_visualization(cfg, args):
    """Switch on the config's visualization hook for --show / --show-dir.

    The hooks of the libraries name their switches differently (mmdet and
    mmseg: ``draw``; mmpretrain: ``enable``; output directory: mmdet
    ``test_out_dir``, mmpretrain ``out_dir``, mmseg the visualizer's
    ``save_dir``), so the hook's signature decides.

    Args:
        cfg (Config): The config; modified in place.
        args (argparse.Namespace): The parsed command line.
    """
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ValueError(
            '--show / --show-dir need a `visualization` hook in '
            "default_hooks, e.g. dict(type='DetVisualizationHook') (mmdet), "
            "dict(type='SegVisualizationHook') (mmseg) or "
            "dict(type='VisualizationHook') (mmpretrain).")
    hook = hooks['visualization']
    params = inspect.signature(_hook_class(cfg,
                                           hook['type']).__init__).parameters
    for switch in ('draw', 'enable'):
        if switch in params:
            hook[switch] = True
    if 'interval' in params:
        hook['interval'] = args.interval
    if args.show:
        hook['show'] = True
        if 'wait_time' in params:
            hook['wait_time'] = args.wait_time
    if args.show_dir:
        if 'test_out_dir' in params:
            hook['test_out_dir'] = args.show_dir
        elif 'out_dir' in params:
            hook['out_dir'] = args.show_dir
        elif cfg.get('visualizer') is not None:
            cfg.visualizer['save_dir'] = args.show_dir
        else:
            raise ValueError(
                f'Cannot route --show-dir: {hook["type"]} has no output '
                'directory argument and the config has no `visualizer`.')


def enable_tta(cfg):
    """Wrap the model in ``cfg.tta_model`` and test with ``tta_pipeline``."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ValueError('--tta needs `tta_model` and `tta_pipeline` in the '
                         'config.')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset_cfg = cfg.test_dataloader.dataset
    while 'dataset' in dataset_cfg:  # wrapped datasets
        dataset_cfg = dataset_cfg['dataset']
    dataset_cfg.pipeline = cfg.tta_pipeline


def merge_args(cfg, args):
    """Apply the command-line options to the config.

    Args:
        cfg (Config): The loaded config; modified in place.
        args (argparse.Namespace): The parsed command line.

    Returns:
        Config: ``cfg``.
    """
    runner_args.merge_common_args(cfg, args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        enable_tta(cfg)
    return cfg


def to_jsonable(value):
    """Convert metric values (numpy / torch scalars and arrays) for JSON."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, 'tolist'):  # numpy arrays / scalars, torch tensors
        return to_jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def main(argv=None):
    register_safe_loading()  # before any checkpoint is read
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    setup_cpu_distributed(cfg, args.launcher)
    runner = runner_args.build_runner(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    with strict_load():  # a wrong checkpoint must not give chance metrics
        metrics = runner.test()
    if is_main_process():
        path = osp.join(runner.log_dir, METRICS_FILE)
        with open(path, 'w') as f:
            json.dump(to_jsonable(metrics), f, indent=2)
        runner.logger.info(f'Metrics written to {path}')
    return metrics


if __name__ == '__main__':
    main()

"""Train a model from a config with mmengine's Runner.

Works with configs of any OpenMMLab library (mmpretrain, mmseg, mmdet,
mmagic) and with this package's configs. Examples::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
    python tools/train.py CONFIG --cfg-options train_cfg.max_epochs=1
    bash tools/dist_train.sh CONFIG NUM_PROCS [ARGS]

The script calls :func:`visionllama_mm.compat.register_safe_loading` before
it reads the config, so that checkpoints load safely on torch >= 2.6
(``--resume``, ``load_from``), and it runs under torchrun on machines without
CUDA (gloo backend).
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config

from visionllama_mm.compat import register_safe_loading, setup_cpu_distributed
from visionllama_mm.weights import check_resume_checkpoint

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:  # runner_args.py, when loaded by path
    sys.path.insert(0, TOOLS_DIR)
import runner_args  # noqa: E402


def parse_args(argv=None):
    """Parse the command line."""
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--work-dir',
        help='the directory for logs and checkpoints; defaults to '
        './work_dirs/<config name>')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a value, resume from the '
        'latest checkpoint in the work directory (if any)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size '
        '(needs `auto_scale_lr` in the config)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    runner_args.add_launcher_args(
        parser, 'train_cfg.max_epochs=1 or "model.backbone.out_indices=(1,2)"')
    return runner_args.parse_launcher_args(parser, argv)


def _has_amp_device() -> bool:
    """Whether mmengine's AmpOptimWrapper can run here (it asserts one of
    these devices)."""
    from mmengine import device
    return any(
        getattr(device, f'is_{name}_available', lambda: False)()
        for name in ('cuda', 'npu', 'mlu', 'musa'))


def configure_amp(cfg, requested: bool) -> None:
    """Switch on mixed precision for ``--amp``; pick the CPU wrapper
    without an accelerator.

    With CUDA (or another device mmengine's ``AmpOptimWrapper`` supports)
    ``--amp`` selects ``AmpOptimWrapper`` (dynamic loss scaling). Without
    one, ``--amp`` and a config's ``AmpOptimWrapper`` select
    ``visionllama_mm.CPUAmpOptimWrapper``: bfloat16 autocast on the CPU,
    which needs no loss scaling.

    Args:
        cfg (Config): The config; modified in place.
        requested (bool): ``--amp`` was given.
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        if requested:
            raise ValueError('--amp needs an `optim_wrapper` in the config.')
        return
    wrapper_type = str(optim_wrapper.get('type',
                                         'OptimWrapper')).split('.')[-1]
    if wrapper_type == 'CPUAmpOptimWrapper':
        return
    if not requested and wrapper_type != 'AmpOptimWrapper':
        return
    if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper'):
        raise ValueError(
            f'--amp needs optim_wrapper.type OptimWrapper, got '
            f'{optim_wrapper.type!r}; set AmpOptimWrapper in the config.')
    if _has_amp_device():
        if wrapper_type == 'AmpOptimWrapper':
            if requested:
                print('AMP is already enabled in the config '
                      '(AmpOptimWrapper).')
            return
        optim_wrapper.type = 'AmpOptimWrapper'
        optim_wrapper.setdefault('loss_scale', 'dynamic')
        return
    source = '--amp' if requested else "the config's AmpOptimWrapper"
    print(f'No GPU: {source} runs the forward under bfloat16 autocast on the '
          'CPU (visionllama_mm.CPUAmpOptimWrapper, no loss scaling); '
          "mmengine's AmpOptimWrapper needs CUDA, NPU, MLU or MUSA.")
    optim_wrapper.type = 'visionllama_mm.CPUAmpOptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        optim_wrapper.pop(key, None)


def merge_args(cfg, args):
    """Apply the command-line options to the config.

    Args:
        cfg (Config): The loaded config; modified in place.
        args (argparse.Namespace): The parsed command line.

    Returns:
        Config: ``cfg``.
    """
    runner_args.merge_common_args(cfg, args)

    configure_amp(cfg, args.amp)

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        # a released / converted weights file has no epoch to resume from
        check_resume_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs `auto_scale_lr = dict('
                             'base_batch_size=...)` in the config.')
        cfg.auto_scale_lr.enable = True

    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    return cfg


def main(argv=None):
    register_safe_loading()  # before any checkpoint is read
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    setup_cpu_distributed(cfg, args.launcher)
    runner = runner_args.build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()

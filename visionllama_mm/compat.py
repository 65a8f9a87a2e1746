"""Compatibility glue: safe checkpoint loading on torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default. That refuses
the pickled Python objects that mmengine runner checkpoints carry
(``HistoryBuffer`` objects with numpy arrays in the message hub) and the
``argparse.Namespace`` that deit / DiT / SiT checkpoints store as ``args``.
mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so on torch
2.13 it can neither resume nor load its own checkpoints.

This module fixes that without ever unpickling arbitrary code:

* :data:`CHECKPOINT_SAFE_GLOBALS` is the exact allow-list of globals those
  files need (measured by saving real runner checkpoints).
* :func:`load_checkpoint_safe` loads with ``weights_only=True`` and that
  allow-list; it falls back to a full unpickle only when the caller passes
  ``trusted=True``. Any other global, and any corrupt or truncated file,
  raises an error that names the file.
* :func:`install_mmengine_safe_loading` (run by ``import visionllama_mm``)
  registers the allow-list with ``torch.serialization.add_safe_globals`` (so
  every ``weights_only`` load in the process, e.g. mmengine's URL loader,
  accepts runner checkpoints) and routes mmengine's local-file checkpoint
  loader, used by ``load_from``, ``resume`` and
  ``mmengine.runner.load_checkpoint``, through :func:`load_checkpoint_safe`.
  There, a file is trusted only when the user sets torch's own switch
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.

:func:`setup_cpu_distributed` lets ``tools/train.py`` / ``tools/test.py`` run
under torchrun on machines without CUDA (mmengine 0.10.7 always calls
``torch.cuda.set_device`` for the ``pytorch`` launcher).
"""
import argparse
import contextlib
import importlib.abc
import io
import logging
import os
import os.path as osp
import pickle
import re
import sys
from typing import Any, Callable, List, Optional, Tuple, Union

import torch

__all__ = [
    'CHECKPOINT_SAFE_GLOBALS', 'CheckpointLoadError', 'UnsafeCheckpointError',
    'checkpoint_safe_globals', 'load_checkpoint_safe',
    'install_mmengine_safe_loading', 'setup_cpu_distributed'
]

FileLike = Union[str, os.PathLike, io.IOBase]
SafeGlobal = Union[Callable, Tuple[Callable, str]]

#: Dotted names of the globals that mmengine runner checkpoints and deit /
#: DiT style ``{'model': ..., 'args': Namespace}`` files reference beyond
#: what torch allows by default. The numpy dtype classes are needed because
#: the weights-only unpickler checks ``type(obj)`` before it restores the
#: state of an unpickled ``numpy.dtype`` (numpy >= 1.25 gives every dtype
#: its own class in ``numpy.dtypes``).
CHECKPOINT_SAFE_GLOBALS = (
    'mmengine.logging.history_buffer.HistoryBuffer',
    'numpy.core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar',
    'numpy.ndarray',
    'numpy.dtype',
    'numpy.dtypes.*',
    'argparse.Namespace',
    'builtins.getattr (restricted to HistoryBuffer.{min,max,current,mean})',
)

# ``HistoryBuffer.__getstate__`` stores its statistics methods, which pickle
# as ``getattr(HistoryBuffer, 'mean')``. A general ``getattr`` is not safe to
# allow, so the name ``builtins.getattr`` maps to this restricted version.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')

# numpy dtype classes whose instances may appear in a checkpoint (numeric
# and bool arrays / scalars only: no object, string or void dtypes).
_NUMPY_DTYPE_CODES = ('?', 'b', 'B', 'h', 'H', 'i', 'I', 'l', 'L', 'q', 'Q',
                      'e', 'f', 'd', 'g', 'F', 'D', 'G')

# Environment switch of torch that forces full unpickling when a call site
# does not pass ``weights_only``; honoured by the patched mmengine loader.
_TORCH_TRUST_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'

_UNSAFE_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global by default'),
    re.compile(r'Trying to load unsupported GLOBAL (\S+) whose module'),
    re.compile(
        r'Trying to call reduce for unrecognized function (.+?)'
        r'(?: which belongs to .*)?$', re.M),
    re.compile(
        r'Can only build Tensor, Parameter, OrderedDict or types '
        r'allowlisted via `add_safe_globals`, but got (.+)$', re.M),
    re.compile(
        r'Can only create new object for nn.Parameter or classes '
        r'allowlisted via `add_safe_globals` but got (.+)$', re.M),
)

_installed = False


class CheckpointLoadError(RuntimeError):
    """A checkpoint file could not be read (missing, corrupt, truncated)."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint's pickle references a global outside the allow-list.

    Nothing from the file was executed when this is raised.

    Args:
        message (str): The error message.
        offending (list[str]): The disallowed globals that were found.
    """

    def __init__(self, message: str, offending: List[str]) -> None:
        super().__init__(message)
        self.offending = offending


def checkpoint_safe_globals() -> List[SafeGlobal]:
    """Return the objects behind :data:`CHECKPOINT_SAFE_GLOBALS`.

    Returns:
        list: Classes / functions, and ``(object, dotted name)`` pairs where
        the name stored in a pickle differs from the object's own
        ``__module__.__qualname__`` (numpy 1.x vs. numpy 2 module paths).
    """
    import numpy as np
    try:  # numpy >= 2 moved the implementation to numpy._core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    safe: List[SafeGlobal] = [argparse.Namespace]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        safe.extend([
            HistoryBuffer,
            (_history_buffer_getattr, 'builtins.getattr'),
        ])
    except ImportError:  # pragma: no cover - torch-only install
        pass
    # Register both spellings so that files written under numpy 1.x and 2.x
    # load under either.
    for name in ('_reconstruct', 'scalar'):
        obj = getattr(multiarray, name)
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            safe.append((obj, f'{module}.{name}'))
    safe.extend([(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')])
    # Only the type check of BUILD needs these, so their names do not matter.
    seen = set()
    for code in _NUMPY_DTYPE_CODES:
        cls = type(np.dtype(code))
        if cls is not np.dtype and cls not in seen:
            seen.add(cls)
            safe.append(cls)
    return safe


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as checkpoints may call it: HistoryBuffer methods only."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr was not an allowed '
        f'global by default (called as getattr({obj!r}, {name!r}); only '
        f'HistoryBuffer.{{{",".join(_HISTORY_BUFFER_METHODS)}}} are '
        'allowed)')


def _describe(f: Any) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    name = getattr(f, 'name', None)
    return name if isinstance(name, str) else f'<{type(f).__name__} object>'


def _python3_name(name: str) -> str:
    """Python 3 spelling of a global that protocol-2 pickles store under
    its Python 2 name (``commands.call`` is ``subprocess.call``)."""
    import _compat_pickle
    module, _, attr = name.rpartition('.')
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return '.'.join(_compat_pickle.NAME_MAPPING[(module, attr)])
    if module in _compat_pickle.IMPORT_MAPPING:
        return f'{_compat_pickle.IMPORT_MAPPING[module]}.{attr}'
    return name


def _find_offending(message: str) -> List[str]:
    found = []
    for pattern in _UNSAFE_PATTERNS:
        for match in pattern.finditer(message):
            name = match.group(1).strip()
            if name not in found:
                found.append(name)
    return found


def _static_unsafe_globals(f: FileLike) -> List[str]:
    """List disallowed globals by disassembling the pickle (runs nothing)."""
    if not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'):
        return []
    try:
        if not isinstance(f, (str, os.PathLike)):
            f.seek(0)
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # legacy (non-zip) files cannot be listed statically
        return []


def _missing_attribute(dotted: str) -> bool:
    """True if ``dotted`` names an attribute that an already imported
    module lacks (a global name cut short by truncation)."""
    module, _, attr = dotted.rpartition('.')
    if module not in sys.modules or not attr.isidentifier():
        return False
    return not hasattr(sys.modules[module], attr)


def _allow_list_context():
    """Context that allows :func:`checkpoint_safe_globals` for one load."""
    if not hasattr(torch.serialization, 'safe_globals'):
        # torch < 2.5 cannot extend the weights-only unpickler: such files
        # are refused unless trusted.
        return contextlib.nullcontext()
    # ``safe_globals`` removes its entries on exit, also entries that were
    # registered before (install_mmengine_safe_loading): pass only the
    # missing ones.
    registered = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals(
        [g for g in checkpoint_safe_globals() if g not in registered])


def _weights_only_reason(message: str) -> str:
    """The unpickler's own reason, without torch's advice around it."""
    marker = 'WeightsUnpickler error:'
    if marker in message:
        message = message.split(marker, 1)[1]
    return ' '.join(message.split('Check the documentation')[0].split())


def load_checkpoint_safe(path_or_file: FileLike,
                         map_location: Any = 'cpu',
                         trusted: bool = False,
                         _trust_hint: Optional[str] = None) -> Any:
    """Load a checkpoint with ``weights_only=True`` and a fixed allow-list.

    The allow-list (:data:`CHECKPOINT_SAFE_GLOBALS`) covers mmengine runner
    checkpoints (``meta``, ``message_hub`` with ``HistoryBuffer`` and numpy
    arrays, optimizer and scheduler states) and files that store an
    ``argparse.Namespace`` (deit, DiT, SiT). Plain state dicts need nothing
    extra.

    Args:
        path_or_file (str | os.PathLike | file-like): The checkpoint.
        map_location (Any): Passed to :func:`torch.load`.
            Defaults to ``'cpu'``.
        trusted (bool): If the file references a global outside the
            allow-list, unpickle it fully (``weights_only=False``), which
            runs whatever code the pickle names. Only for files from a source
            you trust. Defaults to False.

    Returns:
        Any: The loaded object.

    Raises:
        UnsafeCheckpointError: The pickle references a disallowed global and
            ``trusted`` is False. Nothing from the file was executed.
        CheckpointLoadError: The file is missing, corrupt or truncated.
    """
    name = _describe(path_or_file)
    is_path = isinstance(path_or_file, (str, os.PathLike))
    if is_path and not osp.isfile(path_or_file):
        raise CheckpointLoadError(f'Checkpoint file not found: {name}')
    start = None if is_path else path_or_file.tell()
    try:
        with _allow_list_context():
            try:
                return torch.load(
                    path_or_file, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as exc:
                message = str(exc)
                if 'Weights only load failed' not in message:
                    raise  # not a refusal: a broken pickle stream
                offending = _find_offending(message)
                if start is not None:
                    path_or_file.seek(start)
                for glob in _static_unsafe_globals(path_or_file):
                    if glob not in offending:
                        offending.append(glob)
                offending = list(dict.fromkeys(map(_python3_name, offending)))
                if start is not None:
                    path_or_file.seek(start)
                if offending and all(map(_missing_attribute, offending)):
                    offending = []  # names cut short: a truncated stream
                if not offending and not trusted:
                    raise CheckpointLoadError(
                        f'Could not read checkpoint {name}: the weights-only '
                        'unpickler failed without naming a disallowed global '
                        f'({_weights_only_reason(message)}). The file may be '
                        'corrupt; if it is intact and you trust its source, '
                        'load it with trusted=True.') from None
                if not trusted:
                    raise _unsafe_error(name, offending, _trust_hint) from None
    except CheckpointLoadError:
        raise
    except Exception as exc:
        # A damaged pickle stream surfaces as almost any exception type
        # (EOFError, KeyError from the memo, zip reader RuntimeError, ...).
        raise CheckpointLoadError(
            f'Could not read checkpoint {name}: the file looks corrupt or '
            f'truncated ({type(exc).__name__}: {exc}). Re-download or '
            're-save it.') from exc
    # Only reached when the safe load was refused and the caller vouched
    # for the file.
    from mmengine.logging import print_log
    print_log(
        f'Checkpoint {name} needs globals outside the safe allow-list '
        f'({", ".join(offending) or "see torch error"}); unpickling it fully '
        '(weights_only=False) because trusted=True was given.',
        logger='current',
        level=logging.WARNING)
    return torch.load(
        path_or_file, map_location=map_location, weights_only=False)


def _unsafe_error(name: str, offending: List[str],
                  hint: Optional[str]) -> UnsafeCheckpointError:
    message = (
        f'Refusing to load checkpoint {name}: its pickle references '
        f'{", ".join(offending)}, which is not in the '
        'allow-list of safe checkpoint globals '
        '(visionllama_mm.compat.CHECKPOINT_SAFE_GLOBALS). Loading it would '
        'run code named by the file; nothing from it was executed. If you '
        'trust the source of this file, load it with '
        f'visionllama_mm.compat.load_checkpoint_safe({name!r}, trusted=True)'
        ' and re-save the tensors you need (e.g. the state dict).')
    if hint:
        message += ' ' + hint
    return UnsafeCheckpointError(message, offending)


def _env_trusts_checkpoints() -> bool:
    value = os.environ.get(_TORCH_TRUST_ENV, '0').lower()
    return value in ('1', 'y', 'yes', 'true')


def _mmengine_load_from_local(filename: str, map_location: Any) -> Any:
    """Replacement for ``mmengine.runner.checkpoint.load_from_local``."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_safe(
        filename,
        map_location=map_location,
        trusted=_env_trusts_checkpoints(),
        _trust_hint=(
            'For mmengine loading (load_from, --resume, tools/test.py) set '
            f'{_TORCH_TRUST_ENV}=1 to trust every checkpoint this process '
            'loads.'))


# mmengine logs ``class_name[10:]`` of the loader: keep the upstream name.
_mmengine_load_from_local.__name__ = 'load_from_local'

_MMENGINE_CHECKPOINT = 'mmengine.runner.checkpoint'


def _patch_mmengine_checkpoint(module) -> None:
    """Route ``mmengine.runner.checkpoint``'s local loader through
    :func:`load_checkpoint_safe`."""
    module.CheckpointLoader.register_scheme(
        prefixes='', loader=_mmengine_load_from_local, force=True)
    module.load_from_local = _mmengine_load_from_local
    # Released layouts convert while loading; partial loads are errors.
    from visionllama_mm.weights import install_official_loading
    install_official_loading(module)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``mmengine.runner.checkpoint`` right after it is executed.

    ``mmengine.runner`` takes seconds to import (it pulls in the optimizers,
    FSDP and transformers), so ``import visionllama_mm`` does not import it;
    the patch is applied whenever something else does.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != _MMENGINE_CHECKPOINT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch_mmengine_checkpoint(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install_mmengine_safe_loading() -> None:
    """Make mmengine load checkpoints safely on torch >= 2.6 (idempotent).

    * Adds the allow-list to ``torch.serialization.add_safe_globals``.
    * Routes mmengine's local-file checkpoint loader through
      :func:`load_checkpoint_safe`, now if ``mmengine.runner`` is imported
      already, otherwise as soon as it is.

    Does nothing on torch < 2.5, which lacks the allow-list API (and where
    ``weights_only`` still defaults to False).
    """
    global _installed
    if _installed:
        return
    _installed = True
    if not hasattr(torch.serialization, 'safe_globals'):
        return
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    if _MMENGINE_CHECKPOINT in sys.modules:
        _patch_mmengine_checkpoint(sys.modules[_MMENGINE_CHECKPOINT])
    else:
        sys.meta_path.insert(0, _PatchOnImport())


def setup_cpu_distributed(cfg, launcher: str) -> None:
    """Prepare a torchrun (``--launcher pytorch``) job on a machine without
    CUDA.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` before it initialises
    the process group and wraps the model in DDP with ``device_ids=[rank]``;
    both fail without CUDA. When CUDA is unavailable this initialises the
    process group itself (backend from ``cfg.env_cfg.dist_cfg``, which must
    be ``'gloo'``), so mmengine skips its own initialisation, and sets
    ``device_ids=None`` in ``cfg.model_wrapper_cfg``. Does nothing with CUDA
    or for other launchers. The configs name ``nccl`` (the GPU backend);
    without CUDA that cannot work, so ``gloo`` is used instead (logged).

    For ``FlexibleRunner`` configs (a ``strategy`` key) the same is done to
    the strategy's ``model_wrapper``: ``device_ids=None`` for
    ``DDPStrategy``; for ``FSDPStrategy``, ``device_id='cpu'`` (mmengine
    passes the local rank, which torch reads as a CUDA index) and
    ``sync_module_states=False`` (FSDP broadcasts module states only from
    GPU memory; every rank builds the same model from the same seed
    anyway, and a checkpoint given by ``load_from`` is loaded on every
    rank). For ``DeepSpeedStrategy``, mmengine's ``DeepSpeedOptimWrapper``
    becomes ``visionllama_mm.CPUDeepSpeedOptimWrapper`` (the ZeRO step's
    all-gather needs gradient mode off under gloo; see that module).

    Args:
        cfg (mmengine.Config): The config; modified in place.
        launcher (str): The launcher given to the tool.

    Raises:
        ValueError: ``dist_cfg.backend`` is neither ``'gloo'`` nor
            ``'nccl'`` without CUDA.
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'gloo')
    if backend == 'nccl':
        from mmengine.logging import print_log
        print_log(
            "CUDA is not available: using the 'gloo' distributed backend "
            "instead of the config's 'nccl'.",
            logger='current')
    elif backend != 'gloo':
        raise ValueError(
            'CUDA is not available, so env_cfg.dist_cfg.backend must be '
            f"'gloo' (or 'nccl', replaced by gloo) for --launcher pytorch, "
            f'got {backend!r}. Pass --cfg-options '
            'env_cfg.dist_cfg.backend=gloo.')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', **dist_cfg)
    if cfg.get('strategy') is not None:
        _cpu_strategy(cfg.strategy)
        _cpu_deepspeed_optim_wrapper(cfg)
        return
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:  # what mmengine builds by default, on CPU
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif str(wrapper.get(
            'type',
            'MMDistributedDataParallel')).endswith('DistributedDataParallel'):
        wrapper.setdefault('device_ids', None)


def _cpu_deepspeed_optim_wrapper(cfg) -> None:
    """Under ``DeepSpeedStrategy``, select the CPU DeepSpeed optimizer
    wrapper (see :func:`setup_cpu_distributed`); modified in place."""
    kind = str(cfg.strategy.get('type', '')).split('.')[-1]
    wrapper = cfg.get('optim_wrapper')
    if kind != 'DeepSpeedStrategy' or wrapper is None or str(
            wrapper.get('type', '')).split('.')[-1] != 'DeepSpeedOptimWrapper':
        return
    # registers the wrapper (imports deepspeed, so only here)
    import visionllama_mm.engine.optimizers.cpu_deepspeed_optim_wrapper  # noqa
    wrapper['type'] = 'visionllama_mm.CPUDeepSpeedOptimWrapper'


def _cpu_strategy(strategy) -> None:
    """CPU settings of a ``FlexibleRunner`` strategy's model wrapper (see
    :func:`setup_cpu_distributed`); modified in place."""
    kind = str(strategy.get('type', '')).split('.')[-1]
    if kind == 'DDPStrategy':
        wrapper = strategy.get('model_wrapper') or dict(
            type='MMDistributedDataParallel', broadcast_buffers=False)
        wrapper.setdefault('device_ids', None)
        strategy['model_wrapper'] = wrapper
    elif kind == 'FSDPStrategy':
        wrapper = strategy.get('model_wrapper') or dict(
            type='MMFullyShardedDataParallel')
        wrapper['device_id'] = 'cpu'
        wrapper['sync_module_states'] = False
        strategy['model_wrapper'] = wrapper
        if strategy.get('state_dict_cfg') == 'full':
            # 'full' offloads the gathered tensors to the CPU; with the
            # parameters already there, FSDP frees memory that the state
            # dict still points to (segfault in torch 2.13): gather without
            # offloading
            strategy['state_dict_cfg'] = dict(
                state_dict_type='FULL_STATE_DICT',
                state_dict_config=dict(
                    type='FullStateDictConfig',
                    rank0_only=True,
                    offload_to_cpu=False),
                optim_state_dict_config=dict(
                    type='FullOptimStateDictConfig',
                    rank0_only=True,
                    offload_to_cpu=False))

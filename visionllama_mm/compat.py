"""Safe checkpoint loading on torch >= 2.6, and version workarounds.

Why this exists: torch 2.6 made ``torch.load(weights_only=True)`` the
default. The weights-only unpickler refuses the Python objects that
mmengine runner checkpoints carry (``HistoryBuffer`` objects with numpy
arrays in the message hub) and the ``argparse.Namespace`` that deit / DiT /
SiT checkpoints store as ``args``, while mmengine 0.10.7 calls ``torch.load``
without ``weights_only`` in its checkpoint loaders (``load_from``,
``--resume``, ``mmengine.runner.load_checkpoint``, ``init_cfg=dict(
type='Pretrained')``). On torch 2.13 mmengine can therefore neither resume
nor load its own checkpoints; passing ``weights_only=False`` instead would
run whatever code a downloaded file names.

This module loads them without ever unpickling arbitrary code:

* :data:`CHECKPOINT_SAFE_GLOBALS` is the exact allow-list of globals those
  files need (measured by saving real runner checkpoints).
* :func:`load_checkpoint_safe` loads with ``weights_only=True`` and that
  allow-list; it unpickles fully only when the caller passes
  ``trusted=True``. Any other global, and any corrupt or truncated file,
  raises an error that names the file.
* :func:`register_safe_loading` makes mmengine use it. It is explicit (the
  package import does not touch mmengine) and idempotent, and is called by

  - ``tools/train.py``, ``tools/test.py``, ``tools/sample.py`` and the
    other tools that load checkpoints;
  - every shipped config, through
    ``custom_imports = dict(imports=['visionllama_mm.safe_loading'])``
    (importing :mod:`visionllama_mm.safe_loading` calls it), so that
    OpenMMLab's own ``tools/train.py`` gets it too;
  - :func:`visionllama_mm.zoo.register_mmpretrain_models` (for
    ``mmpretrain.get_model(name, pretrained=True)``).

  Python code that builds a Runner from a config dict, or calls
  ``mmengine.runner.load_checkpoint`` without a config, calls it itself.

:func:`setup_cpu_distributed` lets ``tools/train.py`` / ``tools/test.py`` run
under torchrun on machines without CUDA (mmengine 0.10.7 always calls
``torch.cuda.set_device`` for the ``pytorch`` launcher).
"""
import argparse
import contextlib
import io
import logging
import os
import os.path as osp
import pickle
import pickletools
from typing import Any, Callable, List, Optional, Tuple, Union

import torch

__all__ = [
    'CHECKPOINT_SAFE_GLOBALS', 'CheckpointLoadError', 'UnsafeCheckpointError',
    'checkpoint_safe_globals', 'load_checkpoint_safe', 'load_from_local',
    'register_safe_loading', 'setup_cpu_distributed'
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
# does not pass ``weights_only``; honoured by :func:`load_from_local`.
_TORCH_TRUST_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'

# Version checks. torch >= 2.5 can extend the weights-only unpickler
# (``safe_globals``); before 2.6 ``weights_only`` defaulted to False.
_HAS_ALLOW_LIST_API = hasattr(torch.serialization, 'safe_globals')
# torch >= 2.5 lists the globals of a zip checkpoint statically.
_HAS_STATIC_LISTING = hasattr(torch.serialization,
                              'get_unsafe_globals_in_checkpoint')

_registered = False


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


class _RefusedGetattr(pickle.UnpicklingError):
    """Raised by the restricted ``getattr`` for anything but the
    HistoryBuffer statistics methods."""

    def __init__(self, obj: Any, name: str) -> None:
        self.offending = f'builtins.getattr({obj!r}, {name!r})'
        super().__init__(
            f'{self.offending} is not allowed (only HistoryBuffer.'
            f'{{{",".join(_HISTORY_BUFFER_METHODS)}}} are)')


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
    raise _RefusedGetattr(obj, name)


def _describe(f: Any) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    name = getattr(f, 'name', None)
    return name if isinstance(name, str) else f'<{type(f).__name__} object>'


def _python3_name(name: str) -> str:
    """Python 3 spelling of a global that protocol-2 pickles store under
    its Python 2 name (``__builtin__.exec`` is ``builtins.exec``)."""
    import _compat_pickle
    module, _, attr = name.rpartition('.')
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return '.'.join(_compat_pickle.NAME_MAPPING[(module, attr)])
    if module in _compat_pickle.IMPORT_MAPPING:
        return f'{_compat_pickle.IMPORT_MAPPING[module]}.{attr}'
    return name


def _pickle_globals(stream: io.IOBase) -> List[str]:
    """Globals named by the next pickle in ``stream``, read statically.

    Nothing is executed. A damaged stream ends the listing early; what was
    read completely up to there is returned.
    """
    found: List[str] = []
    strings: List[str] = []  # recent string pushes, for STACK_GLOBAL
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name == 'GLOBAL':
                found.append(arg.replace(' ', '.', 1))
            elif opcode.name == 'STACK_GLOBAL' and len(strings) >= 2:
                found.append(f'{strings[-2]}.{strings[-1]}')
            elif isinstance(arg, str):
                strings = (strings + [arg])[-2:]
            if opcode.name == 'STOP':
                break
    except Exception:  # truncated or corrupt: keep the complete names
        pass
    return found


def _legacy_unsafe_globals(f: io.IOBase) -> List[str]:
    """Disallowed globals of a legacy (non-zip) ``torch.save`` file.

    The file is a sequence of pickles (magic number, protocol, system info,
    then the object); :func:`torch.serialization.get_unsafe_globals_in_
    checkpoint` reads only zip files, so the object's pickle is listed here
    against the same allowed sets.
    """
    from torch import _weights_only_unpickler as wo
    if not (hasattr(wo, '_get_allowed_globals')
            and hasattr(wo, '_get_user_allowed_globals')):
        return []
    allowed = set(wo._get_allowed_globals()) | set(
        wo._get_user_allowed_globals())
    for _ in range(3):  # magic number, protocol version, system info
        _pickle_globals(f)
    names = map(_python3_name, _pickle_globals(f))  # torch's spelling
    return [g for g in names if g not in allowed]


def _unsafe_globals(path_or_file: FileLike, start: Optional[int]) -> List[str]:
    """The globals outside the allow-list that the checkpoint names, read
    statically (nothing runs), in their Python 3 spelling."""
    if start is not None:
        path_or_file.seek(start)
    found: List[str] = []
    if _HAS_STATIC_LISTING:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(
                path_or_file)
        except Exception:  # not a (readable) zip file: the legacy format
            if start is not None:
                path_or_file.seek(start)
            with contextlib.ExitStack() as stack:
                f = path_or_file if start is not None else stack.enter_context(
                    open(path_or_file, 'rb'))
                found = _legacy_unsafe_globals(f)
    if start is not None:
        path_or_file.seek(start)
    return sorted(dict.fromkeys(map(_python3_name, found)))


def _allow_list_context():
    """Context that allows :func:`checkpoint_safe_globals` for one load."""
    if not _HAS_ALLOW_LIST_API:
        # torch < 2.5 cannot extend the weights-only unpickler: such files
        # are refused unless trusted.
        return contextlib.nullcontext()
    # ``safe_globals`` removes its entries on exit, also entries that were
    # registered before (register_safe_loading): pass only the missing ones.
    registered = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals(
        [g for g in checkpoint_safe_globals() if g not in registered])


def _refused_getattr(exc: BaseException) -> Optional[_RefusedGetattr]:
    """The restricted ``getattr``'s refusal behind torch's re-raised error
    (torch raises its own ``UnpicklingError`` ``from None``, which keeps
    the original as ``__context__``)."""
    while exc is not None:
        if isinstance(exc, _RefusedGetattr):
            return exc
        exc = exc.__context__
    return None


def load_checkpoint_safe(path_or_file: FileLike,
                         map_location: Any = 'cpu',
                         trusted: bool = False,
                         _trust_hint: Optional[str] = None) -> Any:
    """Load a checkpoint with ``weights_only=True`` and a fixed allow-list.

    The allow-list (:data:`CHECKPOINT_SAFE_GLOBALS`) covers mmengine runner
    checkpoints (``meta``, ``message_hub`` with ``HistoryBuffer`` and numpy
    arrays, optimizer and scheduler states) and files that store an
    ``argparse.Namespace`` (deit, DiT, SiT). Plain state dicts need nothing
    extra. When torch's weights-only unpickler refuses a file, the globals
    that made it refuse are listed by reading the pickle statically.

    Args:
        path_or_file (str | os.PathLike | file-like): The checkpoint.
        map_location (Any): Passed to :func:`torch.load`.
            Defaults to ``'cpu'``.
        trusted (bool): If the weights-only load is refused, unpickle the
            file fully (``weights_only=False``), which runs whatever code the
            pickle names. Only for files from a source you trust.
            Defaults to False.

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
                # refused by the weights-only unpickler, or a broken stream
                refusal = exc
                getattr_call = _refused_getattr(exc)
                offending = [getattr_call.offending] if getattr_call else \
                    _unsafe_globals(path_or_file, start)
    except Exception as exc:
        # A damaged pickle stream surfaces as almost any exception type
        # (EOFError, KeyError from the memo, zip reader RuntimeError, ...).
        raise CheckpointLoadError(
            f'Could not read checkpoint {name}: the file looks corrupt or '
            f'truncated ({type(exc).__name__}: {exc}). Re-download or '
            're-save it.') from exc
    if not trusted:
        if offending:
            raise _unsafe_error(name, offending, _trust_hint) from None
        raise CheckpointLoadError(
            f'Could not read checkpoint {name}: the weights-only unpickler '
            'refused it, and it names no global outside the allow-list, so '
            f'the file looks corrupt or truncated ({refusal}). If it is '
            'intact and you trust its source, load it with trusted=True.'
        ) from None
    from mmengine.logging import print_log
    print_log(
        f'Checkpoint {name} was refused by the weights-only unpickler '
        f'({", ".join(offending) or "no disallowed global listed"}); '
        'unpickling it fully (weights_only=False) because trusted=True was '
        'given.',
        logger='current',
        level=logging.WARNING)
    if start is not None:
        path_or_file.seek(start)
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


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file checkpoint loader, made safe.

    The scheme loader that :func:`register_safe_loading` gives
    ``mmengine.runner.CheckpointLoader`` for local paths (wrapped by
    :mod:`visionllama_mm.weights`, which converts released layouts). A
    file is trusted only when the user sets torch's own switch
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.

    Args:
        filename (str): The checkpoint path (``~`` is expanded).
        map_location (Any): Passed to :func:`torch.load`. Defaults to None.

    Raises:
        FileNotFoundError: There is no such file (as mmengine raises).
        UnsafeCheckpointError | CheckpointLoadError: See
            :func:`load_checkpoint_safe`.
    """
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


def register_safe_loading() -> None:
    """Make mmengine load checkpoints safely on torch >= 2.6 (idempotent).

    * Adds the allow-list to ``torch.serialization.add_safe_globals``, so
      that every ``weights_only`` load in the process (e.g. mmengine's URL
      loader, ``torch.load`` with the default) accepts runner checkpoints.
    * Registers :func:`load_from_local` as the local-file scheme of
      ``mmengine.runner.CheckpointLoader`` (``load_from``, ``--resume``,
      ``Pretrained`` init, ``mmengine.runner.load_checkpoint``), together
      with what :func:`visionllama_mm.weights.install_official_loading`
      adds on the same path: released layouts convert while loading and
      partial loads are errors.

    Call it before a Runner loads a checkpoint. The tools and the shipped
    configs (``custom_imports``) call it; see the module docstring. Imports
    ``mmengine.runner``. Does nothing on torch < 2.5, which lacks the
    allow-list API (and where ``weights_only`` still defaults to False).
    """
    global _registered
    if _registered or not _HAS_ALLOW_LIST_API:
        return
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    from mmengine.runner import checkpoint

    from visionllama_mm.weights import install_official_loading
    install_official_loading(checkpoint, load_from_local)
    _registered = True


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
    passes the local rank, which torch reads as a CUDA index). FSDP
    broadcasts module states (``sync_module_states``) only from GPU memory:
    ``visionllama_mm.FSDPStrategy`` broadcasts them itself on CPU, so the
    option is kept for it and set to False for mmengine's own strategy.
    For ``DeepSpeedStrategy``, mmengine's ``DeepSpeedOptimWrapper`` becomes
    ``visionllama_mm.CPUDeepSpeedOptimWrapper`` (the ZeRO step's all-gather
    needs gradient mode off under gloo; see that module).

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
        if not str(strategy.get('type', '')).startswith('visionllama_mm.'):
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

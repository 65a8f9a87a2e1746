"""Official weights through mmengine's checkpoint loading, and loud loads.

Two things are installed into ``mmengine.runner.checkpoint`` (by
:func:`visionllama_mm.compat.register_safe_loading`, which the tools and the
shipped configs call), so that every mmengine route - ``init_cfg=dict(
type='Pretrained', ...)``, ``load_from``, ``tools/test.py``,
``mmengine.runner.load_checkpoint`` and through it
``mmpretrain.get_model(name, pretrained=...)`` and the inferencers - gets
them:

* **Official layouts convert while loading.** The checkpoint loaders of
  ``mmengine.runner.CheckpointLoader`` for local paths and for ``http://``,
  ``https://`` and ``file://`` URLs pass what they read through
  :func:`convert_official_checkpoint`. It recognises the released files by
  their keys and returns ``{'state_dict': ..., 'meta': ...}`` in this
  package's layout:

  ============================  ==========================================
  released file                 becomes
  ============================  ==========================================
  Pyramid VisionLLaMA deit      ``backbone.*`` + ``head.fc.*`` (mmpretrain
  ``best_checkpoint.pth``       ``ImageClassifier``; dense configs load it
                                with ``prefix='backbone.'``)
  plain deit-style              the same layout (``VisionLLaMADeiT``
  ``vit_llama_rope_*`` files    backbone)
  DiT-LLaMA / SiT-LLaMA ``.pt`` the ``ema`` weights under ``net.`` (the
                                registered generation models)
  ============================  ==========================================

  MAE ``epoch_*.pth`` files are mmengine runner checkpoints whose keys are
  already ours (the backbones drop the unused ``pos_embed``), and the
  released LLaMA-Adapter V2 files (``{'model', 'config'}``) are read by
  ``LLaMAAdapterV2``'s own load hook; both pass unchanged. URLs are
  downloaded once into torch's hub cache (``<TORCH_HOME>/hub/checkpoints``,
  where mmengine's ``load_from_http`` keeps them) and then read like a local
  file, i.e. with ``weights_only=True`` (:mod:`visionllama_mm.compat`).
* **Partial loads are errors.** ``mmengine.runner.checkpoint.
  load_state_dict``, which every route above ends in, raises
  :class:`CheckpointMismatchError` when a model that contains modules of
  this package is left with tensors the checkpoint did not fill (missing or
  of another shape). The message names the file, how many tensors matched,
  the first unmatched keys on both sides and the likely fix. Tensors that a
  module declares new by design in its ``checkpoint_new_keys`` (fnmatch
  patterns relative to the module, e.g. the dense pyramid's ``norm_list``)
  do not count. :func:`allow_partial_load` (or the environment variable
  ``VISIONLLAMA_MM_ALLOW_PARTIAL_LOAD=1``) turns the error into a warning in
  the run's log; :func:`strict_load` (used by ``tools/test.py``) also
  refuses unused checkpoint tensors and new-by-design gaps.
* **Inference loads are strict.** A load into a model of this package that
  an inference entry point of the OpenMMLab libraries starts - the
  inferencers (``ImageClassificationInferencer``, ``MMSegInferencer``,
  ``DetInferencer``, the mmagic inferencers, i.e. everything built on
  ``mmengine.infer.BaseInferencer`` or mmpretrain's ``BaseInferencer``),
  ``mmpretrain.get_model`` / ``init_model``, ``mmseg.apis.init_model``,
  ``mmdet.apis.init_detector`` and ``mmagic.apis.init_model`` - runs as
  under :func:`strict_load`: predictions from a model with a tensor the file
  did not fill, or from a file with tensors the model does not use, would be
  silently wrong. These entry points are recognised by the module of a
  calling frame (:data:`INFERENCE_APIS`), so nothing of those libraries is
  imported or patched. The tools of this repository that load weights for
  inference (``tools/sample.py``, ``tools/analysis_tools/
  mae_reconstruction.py``, the resolution sweep) use :func:`load_strict`.
  :func:`allow_partial_load` still applies.
"""
import contextlib
import fnmatch
import logging
import os
import os.path as osp
import re
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch.nn as nn

__all__ = [
    'OFFICIAL_LAYOUTS', 'CheckpointMismatchError', 'detect_official_layout',
    'convert_official_checkpoint', 'allow_partial_load', 'strict_load',
    'check_resume_checkpoint', 'install_official_loading', 'load_strict',
    'INFERENCE_APIS'
]

#: Layouts :func:`detect_official_layout` recognises. ``'llama-adapter-v2'``
#: files pass unchanged (the model's load hook reads them).
OFFICIAL_LAYOUTS = ('pyramid-deit', 'plain-deit', 'dit', 'llama-adapter-v2')

#: Environment switch that allows partial loads everywhere in the process.
PARTIAL_ENV = 'VISIONLLAMA_MM_ALLOW_PARTIAL_LOAD'

#: Modules (and their submodules) whose functions load weights for
#: inference; a load of a model of this package they start is strict.
INFERENCE_APIS = ('mmengine.infer', 'mmpretrain.apis', 'mmseg.apis',
                  'mmdet.apis', 'mmagic.apis')

_URL_PREFIXES = ('http://', 'https://', 'file://')
_SHOWN = 5  # unmatched keys listed per side in the error
_SIZE_MISMATCH = re.compile(r'size mismatch for (\S+?):')
_MMENGINE_SUMMARY = ('The model and loaded state dict do not match',
                     'unexpected key in source state_dict',
                     'missing keys in source state_dict')

_state = threading.local()


class CheckpointMismatchError(RuntimeError):
    """A checkpoint did not fill the tensors a model expects from it."""


# ---------------------------------------------------------------------------
# official layouts
# ---------------------------------------------------------------------------


def _strip_module(keys) -> List[str]:
    return [k[len('module.'):] if k.startswith('module.') else k for k in keys]


def detect_official_layout(ckpt: Any) -> Optional[str]:
    """Which released layout a loaded checkpoint has.

    Args:
        ckpt (Any): The object read from the file.

    Returns:
        str | None: One of :data:`OFFICIAL_LAYOUTS`, or None for anything
        else (mmengine checkpoints, converted files, plain state dicts).
    """
    if not isinstance(ckpt, dict) or isinstance(ckpt.get('state_dict'), dict):
        return None
    model = ckpt.get('model')
    if isinstance(model, dict) and 'config' in ckpt and any(
            k.startswith(('llama.', 'llma.', 'clip_proj.', 'adapter_query.'))
            for k in model):
        return 'llama-adapter-v2'
    ema = ckpt.get('ema')
    weights = ema if isinstance(ema, dict) else model
    if not isinstance(weights, dict):
        return None
    keys = set(_strip_module(weights))
    if 'x_embedder.proj.weight' in keys and any(
            k.startswith('t_embedder.') for k in keys):
        return 'dit'
    if 'patch_embeds.0.proj.weight' in keys:
        return 'pyramid-deit'
    if 'patch_embed.proj.weight' in keys and any(
            k.startswith('blocks.') for k in keys):
        return 'plain-deit'
    return None


def convert_official_checkpoint(ckpt: Any,
                                source: Optional[str] = None) -> Any:
    """Convert a released checkpoint to this package's layout.

    Args:
        ckpt (Any): The object read from the file.
        source (str, optional): The file name, recorded in ``meta``.

    Returns:
        Any: ``{'state_dict': ..., 'meta': {...}}`` for a converted layout
        (``meta['official_layout']`` names it), else ``ckpt`` itself.
    """
    layout = detect_official_layout(ckpt)
    if layout is None or layout == 'llama-adapter-v2':
        return ckpt
    if layout == 'dit':
        from visionllama_mm.generation.checkpoint import (
            convert_official_state_dict, official_meta)
        state = convert_official_state_dict(ckpt, 'ema', prefix='net.')
        meta = dict(official_meta(ckpt), weights='ema')
    elif layout == 'pyramid-deit':
        from visionllama_mm.converters import convert_pyramid
        state, meta = convert_pyramid(ckpt, 'mmpretrain', key='model')
    else:
        from visionllama_mm.converters import convert
        state, meta = convert(
            ckpt, style='deit', key='model', layout='mmpretrain')
    meta['official_layout'] = layout
    if source is not None:
        meta['converted_from'] = str(source)
    return {'state_dict': state, 'meta': meta}


# ---------------------------------------------------------------------------
# mmengine checkpoint loaders
# ---------------------------------------------------------------------------


def _converting(loader: Callable, name: str) -> Callable:
    """Wrap an mmengine scheme loader with the layout conversion."""

    def load(filename, map_location=None):
        ckpt = loader(filename, map_location)
        _state.source = filename
        return convert_official_checkpoint(ckpt, source=filename)

    # mmengine logs ``loader.__name__[10:]`` as the backend name
    load.__name__ = name
    load.__wrapped__ = loader
    return load


def _url_cache_path(url: str) -> str:
    from urllib.parse import urlparse

    from torch.hub import get_dir
    return osp.join(get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def _download(url: str) -> str:
    """Download ``url`` once into torch's hub cache (what mmengine's
    ``load_from_http`` uses); rank 0 downloads, the others wait."""
    import torch.distributed as dist
    from mmengine.dist import get_dist_info
    from torch.hub import download_url_to_file
    cached = _url_cache_path(url)
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(cached):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        download_url_to_file(url, cached, progress=os.isatty(0))
    if world_size > 1:
        dist.barrier()
    return cached


def install_official_loading(module, read_local: Callable) -> None:
    """Install the converting loaders and the load check (idempotent).

    Called by :func:`visionllama_mm.compat.register_safe_loading`.

    Args:
        module: ``mmengine.runner.checkpoint``.
        read_local (callable): ``(filename, map_location)`` reader of local
            files, :func:`visionllama_mm.compat.load_from_local`; URLs are
            downloaded once and read with it too.
    """
    loaders = module.CheckpointLoader._schemes
    if getattr(loaders.get(''), '__wrapped__', None) is not read_local:
        module.CheckpointLoader.register_scheme(
            prefixes='',
            loader=_converting(read_local, 'load_from_local'),
            force=True)

        def from_url(filename, map_location=None):
            return read_local(_download(filename), map_location)

        module.CheckpointLoader.register_scheme(
            prefixes=_URL_PREFIXES,
            loader=_converting(from_url, 'load_from_http'),
            force=True)
    original = module.load_state_dict
    if not getattr(original, '_visionllama_mm_checked', False):
        module.load_state_dict = _checked_load_state_dict(original)
        # the re-export, when mmengine.runner was imported before us
        package = sys.modules.get('mmengine.runner')
        if getattr(package, 'load_state_dict', None) is original:
            package.load_state_dict = module.load_state_dict


# ---------------------------------------------------------------------------
# the load check
# ---------------------------------------------------------------------------


def _mode() -> str:
    modes = getattr(_state, 'modes', None)
    if modes:
        return modes[-1]
    value = os.environ.get(PARTIAL_ENV, '0').lower()
    return 'partial' if value in ('1', 'y', 'yes', 'true') else 'default'


@contextlib.contextmanager
def _load_mode(mode: str) -> Iterator[None]:
    if not hasattr(_state, 'modes'):
        _state.modes = []
    _state.modes.append(mode)
    try:
        yield
    finally:
        _state.modes.pop()


def allow_partial_load() -> contextlib.AbstractContextManager:
    """Context in which loads that leave tensors unfilled only warn.

    Example::

        with visionllama_mm.weights.allow_partial_load():
            model.init_weights()
    """
    return _load_mode('partial')


def strict_load() -> contextlib.AbstractContextManager:
    """Context in which every model tensor must come from the checkpoint
    and every checkpoint tensor must be used (evaluation, inference); it
    applies to the models of every library, not only this package's."""
    return _load_mode('strict')


def _inference_caller() -> Optional[str]:
    """The module of the innermost calling frame that belongs to one of
    :data:`INFERENCE_APIS`, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get('__name__') or ''
        if any(name == api or name.startswith(api + '.')
               for api in INFERENCE_APIS):
            return name
        frame = frame.f_back
    return None


def load_strict(model: nn.Module,
                filename: str,
                map_location: Any = 'cpu',
                revise_keys: Optional[list] = None) -> dict:
    """Load a checkpoint for inference: every tensor of ``model`` must come
    from the file and every tensor of the file must be used.

    The file goes through mmengine's checkpoint loading (local paths and
    URLs, released layouts converted, ``weights_only`` reading), so this is
    ``mmengine.runner.load_checkpoint`` under :func:`strict_load`.

    Args:
        model (nn.Module): The model to fill.
        filename (str): Path or URL of the checkpoint.
        map_location (Any): Passed to the loader. Defaults to ``'cpu'``.
        revise_keys (list, optional): ``(pattern, replacement)`` pairs
            applied to the file's keys (mmengine's ``revise_keys``).
            Defaults to stripping a ``module.`` prefix.

    Returns:
        dict: The loaded checkpoint (``meta`` etc.).

    Raises:
        CheckpointMismatchError: The file does not fit the model; the
            message names the file and the unmatched keys.
    """
    from mmengine.runner.checkpoint import load_checkpoint

    from visionllama_mm.compat import register_safe_loading
    register_safe_loading()  # weights_only reading, layouts converted
    kwargs = {} if revise_keys is None else dict(revise_keys=revise_keys)
    with strict_load():
        return load_checkpoint(
            model, filename, map_location=map_location, **kwargs)


def _is_ours(model: nn.Module) -> bool:
    return any(
        type(m).__module__.startswith('visionllama_mm.')
        for m in model.modules())


def _expected_keys(model: nn.Module) -> List[str]:
    keys = []
    for name, module in model.named_modules():
        prefix = name + '.' if name else ''
        for pname, param in module._parameters.items():
            if param is not None:
                keys.append(prefix + pname)
        for bname, buf in module._buffers.items():
            if buf is not None and \
                    bname not in module._non_persistent_buffers_set and \
                    bname != 'num_batches_tracked':
                keys.append(prefix + bname)
    return keys


def _new_by_design(model: nn.Module) -> List[str]:
    patterns = []
    for name, module in model.named_modules():
        prefix = name + '.' if name else ''
        for pattern in getattr(module, 'checkpoint_new_keys', ()) or ():
            patterns.append(prefix + pattern)
    return patterns


def _prefix_hint(missing: List[str], unexpected: List[str]) -> str:
    """The likely fix for keys that differ by a leading component."""
    missing_set = set(missing)
    heads = {k.split('.', 1)[0] for k in unexpected if '.' in k}
    for head in sorted(heads):
        stripped = [
            k[len(head) + 1:] for k in unexpected if k.startswith(head + '.')
        ]
        if any(k in missing_set for k in stripped):
            return (f"the checkpoint's keys start with '{head}.': set "
                    f"prefix='{head}.' in the Pretrained init_cfg (or load "
                    'it into the module it belongs to)')
    heads = {k.split('.', 1)[0] for k in missing if '.' in k}
    unexpected_set = set(unexpected)
    for head in sorted(heads):
        if any(k[len(head) + 1:] in unexpected_set for k in missing
               if k.startswith(head + '.')):
            return (f"the model's keys start with '{head}.' and the "
                    "checkpoint's do not: put the Pretrained init_cfg on "
                    f"model.{head}, or load with revise_keys=[(r'^', "
                    f"'{head}.')]")
    if unexpected and len(unexpected) >= len(missing):
        return ('the checkpoint holds another model (or the file was '
                'converted for another face); check the file and the '
                'config')
    return ''


def _report(model: nn.Module, source: str, expected: List[str], new: List[str],
            missing: List[str], unexpected: List[str], mismatched: List[str],
            other: List[str]) -> str:
    unfilled = set(missing) | set(mismatched) | set(new)
    matched = sum(k not in unfilled for k in expected)
    lines = [
        f'Checkpoint {source} does not fit {type(model).__name__}: '
        f'{matched} of its {len(expected) - len(new)} expected tensors '
        'matched'
    ]
    if new:
        lines[0] += (f' ({len(new)} more are new by design and not '
                     f'counted: {new[:_SHOWN]})')
    if missing:
        lines.append(f'  model keys not in the checkpoint ({len(missing)}): '
                     f'{missing[:_SHOWN]}')
    if unexpected:
        lines.append(f'  checkpoint keys the model does not have '
                     f'({len(unexpected)}): {unexpected[:_SHOWN]}')
    if mismatched:
        lines.append(f'  tensors of another shape ({len(mismatched)}): '
                     f'{mismatched[:_SHOWN]} (made for another arch or '
                     'size?)')
    lines.extend('  ' + msg.strip() for msg in other)
    hint = _prefix_hint(missing, unexpected)
    if hint:
        lines.append(f'Likely fix: {hint}.')
    return '\n'.join(lines)


def _checked_load_state_dict(original: Callable) -> Callable:
    """Wrap mmengine's ``load_state_dict`` with the load check."""

    def load_state_dict(module, state_dict, strict=False, logger=None):
        from mmengine.logging import print_log
        from mmengine.model import is_model_wrapper
        target = module.module if is_model_wrapper(module) else module
        source = getattr(_state, 'source', None) or 'state dict'
        _state.source = None
        mode = 'strict' if strict else _mode()
        caller = None
        if mode == 'default' and _is_ours(target):
            caller = _inference_caller()
            if caller is not None:  # predictions of a partial load are wrong
                mode = 'strict'
        if mode != 'strict' and not _is_ours(target):
            return original(module, state_dict, strict, logger)
        seen: Dict[str, list] = {}

        def grab(mod, sd, prefix, metadata, strict_, missing, unexpected,
                 errors):
            seen.update(missing=missing, unexpected=unexpected, errors=errors)

        handle = target.register_load_state_dict_pre_hook(grab)
        try:
            original(module, state_dict, strict=False, logger='silent')
        finally:
            handle.remove()
        missing = [
            k for k in seen.get('missing', [])
            if 'num_batches_tracked' not in k
        ]
        unexpected = list(seen.get('unexpected', []))
        # mmengine appends its own summary to the same list: skip it
        errors = [
            e for e in seen.get('errors', [])
            if not e.startswith(_MMENGINE_SUMMARY)
        ]
        mismatched = [
            m.group(1) for m in map(_SIZE_MISMATCH.search, errors) if m
        ]
        other = [e for e in errors if not _SIZE_MISMATCH.search(e)]
        patterns = [] if mode == 'strict' else _new_by_design(target)
        new = [
            k for k in missing if any(
                fnmatch.fnmatchcase(k, p) for p in patterns)
        ]
        unfilled = [k for k in missing if k not in new]
        if not (missing or unexpected or errors):
            return
        message = _report(target, source, _expected_keys(target), new,
                          unfilled, unexpected, mismatched, other)
        failed = unfilled or errors or (mode == 'strict' and unexpected)
        if failed and mode != 'partial':
            if caller is not None:
                message += (f'\nLoads for inference ({caller}) are strict: '
                            'every tensor of the model and of the file.')
            raise CheckpointMismatchError(
                message + '\nTo load only part of it on purpose, wrap the '
                'call in visionllama_mm.weights.allow_partial_load() or set '
                f'{PARTIAL_ENV}=1.')
        print_log(
            message,
            logger=logger if logger is not None else 'current',
            level=logging.WARNING if failed or unexpected else logging.INFO)

    load_state_dict._visionllama_mm_checked = True
    load_state_dict.__wrapped__ = original
    load_state_dict.__doc__ = original.__doc__
    return load_state_dict


# ---------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------


def check_resume_checkpoint(path: str) -> None:
    """Raise a clear error if ``path`` is not an mmengine runner checkpoint.

    Reads the file memory-mapped (only its pickled structure is parsed), so
    a runner checkpoint costs next to nothing here. Files this function
    cannot read are left for the runner to report.

    Raises:
        ValueError: The file has no ``meta`` (epoch / iteration) entry, e.g.
            a released or converted weights file.
    """
    import torch
    if not osp.isfile(path):
        return
    try:
        ckpt = torch.load(
            path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # legacy formats, disallowed globals: runner reports
        return
    if isinstance(ckpt, dict) and isinstance(ckpt.get('meta'), dict):
        return
    kind = detect_official_layout(ckpt)
    what = f'a released {kind} file' if kind else \
        f'a weights-only file (entries: {sorted(ckpt)[:6]})' \
        if isinstance(ckpt, dict) else f'a {type(ckpt).__name__}'
    raise ValueError(
        f'--resume {path}: this is {what}, not a checkpoint written by the '
        "runner (it has no 'meta' with the epoch / iteration to resume "
        'from). To start training from these weights use load_from (or '
        'the Pretrained init_cfg) instead of --resume.')

"""``ResumableCheckpointHook``: checkpoints that survive a crash and resume
exactly.

mmengine 0.10.7's ``CheckpointHook`` removes the oldest checkpoint *before*
it writes the new one, writes the new file in place and then rewrites
``last_checkpoint``. A process killed in that window leaves the old file
deleted, the new one missing or partial and ``last_checkpoint`` pointing at
the deleted file: nothing is left to resume from. This hook keeps mmengine's
options and file names and changes the order of the steps:

1. the checkpoint is written to a hidden temporary file in the same folder,
   flushed to disk (``fsync``) and moved into place with ``os.replace``
   (:class:`AtomicLocalBackend`), so a checkpoint file is either complete
   or absent;
2. ``last_checkpoint`` is then replaced the same way;
3. only then are checkpoints beyond ``max_keep_ckpts`` (and a superseded
   best checkpoint) removed.

A kill at any point leaves at least the previous complete checkpoint and a
``last_checkpoint`` naming a complete file (the new one or the previous
one). Leftover temporary files are removed when training starts again.

On ``--resume`` (``runner.resume``) the hook picks the file before the
runner loads it. Without a path (auto resume) that is the newest complete
checkpoint of the checkpoint folder (newer than what ``last_checkpoint``
names if a run stopped in between), else the file ``last_checkpoint``
names. A requested file that is incomplete is named in a warning, with the
reason, and the newest complete checkpoint of its folder is used instead;
without one, a ``CheckpointLoadError`` names the file. A file is complete
when its zip directory (the end of a ``torch.save`` file) is intact; a
file damaged elsewhere still fails to load with a
:class:`~visionllama_mm.compat.CheckpointLoadError` that names it.

For an exact resume the hook also

* seeds ``random``, ``numpy.random`` and ``torch`` before every training
  iteration from ``(seed, iteration)`` (and the rank with
  ``randomness.diff_rank_seed``), so dropout, drop-path or MAE masks of
  iteration ``i`` do not depend on what ran before;
* resumes an epoch-based loop in the middle of an epoch by telling a
  :class:`~visionllama_mm.engine.ResumableSampler` to skip the batches
  already trained on (mmengine's loop would replay the whole epoch);
* stores the sampler's seed in the checkpoint (``meta['data_state']``) and
  restores it.

The data order and the augmentation are replayed exactly only with
``sampler=dict(type='visionllama_mm.ResumableSampler')`` in the training
dataloader; with another sampler the hook logs a warning.
"""
import logging
import os
import os.path as osp
import re
import tempfile
import zipfile
from typing import List, Optional

from mmengine.dist import get_rank, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from visionllama_mm.registry import HOOKS

__all__ = [
    'ATOMIC_BACKEND', 'AtomicLocalBackend', 'ResumableCheckpointHook',
    'atomic_write', 'checkpoint_defect'
]

#: Name of :class:`AtomicLocalBackend` in mmengine's storage backends.
ATOMIC_BACKEND = 'visionllama_mm_atomic_local'

# Temporary files are ``.<name>.partial-<random>`` next to ``<name>``.
_PARTIAL = '.partial-'
_ZIP_MAGIC = b'PK\x03\x04'


def _fsync_dir(path: str) -> None:
    """Flush a directory entry (the rename) to disk where the OS allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen partial.

    The bytes go to a temporary file in the same folder, which is flushed
    to disk and then renamed over ``path`` (``os.replace`` is atomic within
    a file system); on any error the temporary file is removed and ``path``
    is unchanged.

    Args:
        data (bytes): The file content.
        path (str): The destination.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{osp.basename(path)}{_PARTIAL}')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local storage backend whose ``put`` / ``put_text`` write
    through :func:`atomic_write`."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, os.fspath(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), os.fspath(filepath))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def checkpoint_defect(path: str) -> Optional[str]:
    """Say why ``path`` is not a complete checkpoint file (None if it is).

    A ``torch.save`` file is a zip archive whose directory is written last,
    so a truncated file has no readable directory. Files in torch's legacy
    (non-zip) format cannot be checked this cheaply and count as complete.
    """
    if not osp.isfile(path):
        return 'the file does not exist'
    if osp.getsize(path) == 0:
        return 'the file is empty'
    with open(path, 'rb') as f:
        if f.read(4) != _ZIP_MAGIC:
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f'the file is truncated or corrupt ({exc})'
    if not any(name.endswith('data.pkl') for name in names):
        return 'the archive holds no data.pkl (not a torch.save file)'
    return None


class _DeferredRemoval:
    """A storage backend whose ``remove`` / ``rmtree`` only record paths."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.pending: List[str] = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path) -> None:
        self.pending.append(path)

    def rmtree(self, path) -> None:
        self.pending.append(path)


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe saving and exact resume.

    Takes every argument of ``mmengine.hooks.CheckpointHook`` (``interval``,
    ``by_epoch``, ``max_keep_ckpts``, ``save_best``, ``out_dir``, ...) and
    behaves the same, except for the order of writes and removals and the
    resume logic described in the module docstring. Checkpoints on the local
    file system go through :class:`AtomicLocalBackend` unless ``backend_args``
    or ``file_client_args`` name another backend.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._local_default = (
            self.backend_args is None and self.file_client_args is None)

    # ------------------------------------------------------------ resume
    def _checkpoint_dir(self, runner) -> str:
        """Where this hook writes checkpoints (as ``before_train`` sets it)."""
        if self.out_dir is None or self.out_dir == runner.work_dir:
            return runner.work_dir
        return osp.join(self.out_dir,
                        osp.basename(runner.work_dir.rstrip(osp.sep)))

    def _candidates(self, folder: str) -> List[str]:
        """Checkpoint files written by this hook in ``folder``, newest
        first."""
        pattern = re.compile(
            re.escape(self.filename_tmpl).replace(re.escape('{}'), r'(\d+)') +
            '$')
        found = []
        if osp.isdir(folder):
            for name in os.listdir(folder):
                match = pattern.match(name)
                if match:
                    found.append((int(match.group(1)), osp.join(folder, name)))
        return [path for _, path in sorted(found, reverse=True)]

    def before_run(self, runner) -> None:
        """Choose the checkpoint that ``--resume`` loads (see the module
        docstring)."""
        if not getattr(runner, '_resume', False):
            return
        requested = runner._load_from
        if requested is not None and '://' in str(requested):
            return  # a remote file: left to mmengine
        if requested is None:
            self._choose_latest(runner)
            return
        reason = checkpoint_defect(requested)
        if reason is None:
            return
        folder = osp.dirname(osp.abspath(requested))
        fallback = self._newest_complete(folder, exclude=requested)
        if fallback is None:
            from visionllama_mm.compat import CheckpointLoadError
            raise CheckpointLoadError(
                f'Cannot resume from checkpoint {requested}: {reason}, and '
                f'{folder} holds no earlier complete checkpoint.')
        runner.logger.warning(
            f'Cannot resume from checkpoint {requested}: {reason}. Falling '
            f'back to the newest complete checkpoint {fallback}.')
        runner._load_from = fallback

    def _newest_complete(self,
                         folder: str,
                         exclude: Optional[str] = None) -> Optional[str]:
        for path in self._candidates(folder):
            if exclude is not None and osp.abspath(path) == osp.abspath(
                    exclude):
                continue
            reason = checkpoint_defect(path)
            if reason is None:
                return path
            print_log(
                f'Skipping checkpoint {path}: {reason}.',
                logger='current',
                level=logging.WARNING)
        return None

    def _choose_latest(self, runner) -> None:
        """Auto resume: the newest complete checkpoint of this hook's
        folder, else the complete file ``last_checkpoint`` names."""
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        named = None
        if osp.isfile(pointer):
            with open(pointer) as f:
                named = f.read().strip() or None
        newest = self._newest_complete(self._checkpoint_dir(runner))
        if newest is None and named is not None:
            reason = checkpoint_defect(named)
            if reason is None:
                newest = named
            else:
                runner.logger.warning(
                    f'Cannot resume from checkpoint {named} (named by '
                    f'{pointer}): {reason}.')
        if newest is None:
            return  # nothing saved yet: mmengine starts from scratch
        if named is not None and osp.abspath(named) != osp.abspath(newest):
            runner.logger.warning(
                f'{pointer} names {named}, but the newest complete '
                f'checkpoint is {newest} (a run stopped between saving it '
                'and updating last_checkpoint, or the named file is '
                'damaged): resuming from the newest.')
        runner._load_from = newest

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('data_state')
        sampler = self._sampler(runner)
        if state and sampler is not None and 'sampler_seed' in state:
            sampler.seed = state['sampler_seed']

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        sampler = self._sampler(runner)
        if sampler is not None and hasattr(sampler, 'seed'):
            checkpoint.setdefault('meta', {})['data_state'] = dict(
                sampler_seed=sampler.seed, sampler=type(sampler).__name__)

    # ------------------------------------------------------------ training
    @staticmethod
    def _sampler(runner):
        loop = getattr(runner, '_train_loop', None)
        loader = getattr(loop, 'dataloader', None)
        if loader is None:
            return None
        return getattr(loader, 'sampler', None)

    def before_train(self, runner) -> None:
        if self._local_default and '://' not in str(self.out_dir or ''):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for name in os.listdir(self.out_dir) if osp.isdir(
                    self.out_dir) else ():
                if name.startswith('.') and _PARTIAL in name:
                    os.remove(osp.join(self.out_dir, name))
                    runner.logger.info(
                        f'Removed the partial checkpoint {name} of an '
                        'interrupted save.')
        from visionllama_mm.engine.samplers import ResumableSampler
        sampler = self._sampler(runner)
        if not isinstance(sampler, ResumableSampler):
            runner.logger.warning(
                f'The training sampler is {type(sampler).__name__}, so a '
                'resumed run will not replay the data augmentation exactly; '
                "use sampler=dict(type='visionllama_mm.ResumableSampler').")

    def before_train_epoch(self, runner) -> None:
        from mmengine.runner import EpochBasedTrainLoop

        from visionllama_mm.engine.samplers import ResumableSampler
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop):
            return  # the iteration loop replays skipped batches itself
        done = runner.iter - runner.epoch * len(loop.dataloader)
        if done <= 0:
            return
        sampler = self._sampler(runner)
        if not isinstance(sampler, ResumableSampler):
            runner.logger.warning(
                f'Resuming at iteration {runner.iter}, {done} batches into '
                f'epoch {runner.epoch + 1}: the {type(sampler).__name__} '
                'cannot skip them, so this epoch is trained in full.')
            return
        batch_size = loop.dataloader.batch_size or getattr(
            loop.dataloader.batch_sampler, 'batch_size', 1)
        sampler.skip(done * batch_size * sampler.world_size)
        runner.logger.info(
            f'Resuming in the middle of epoch {runner.epoch + 1}: skipping '
            f'the {done} batches already trained on.')

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        from visionllama_mm.engine.samplers import sample_seed, seed_all
        keys = [runner.seed, runner.iter]
        if runner._randomness_cfg.get('diff_rank_seed', False):
            keys.append(get_rank())
        seed_all(sample_seed(*keys))
        super().before_train_iter(runner, batch_idx, data_batch)

    # ------------------------------------------------------------ saving
    def _remove(self, paths) -> None:
        keep = {self.last_ckpt, getattr(self, 'best_ckpt_path', None)}
        keep.update(getattr(self, 'best_ckpt_path_dict', {}).values())
        for path in paths:
            if path in keep:
                continue
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints
                self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        tracked = self.max_keep_ckpts > 0 and not (
            self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step)
        stale = []
        if tracked:
            # The saved message hub lists every checkpoint that exists
            # while the file is written, the ones about to be removed
            # included: a run killed before the removal below removes them
            # when it is resumed (CheckpointHook.before_train).
            ids = list(self.keep_ckpt_ids) + [step]
            runner.message_hub.update_info('keep_ckpt_ids', ids)
            stale = ids[:-self.max_keep_ckpts]
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if tracked:
            self.keep_ckpt_ids.append(step)  # the bounded deque drops stale
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        if not is_main_process():
            return
        atomic_write(
            str(self.last_ckpt).encode(),
            osp.join(runner.work_dir, 'last_checkpoint'))
        self._remove([
            self.file_backend.join_path(self.out_dir,
                                        self.filename_tmpl.format(s))
            for s in stale
        ])

    def _save_best_checkpoint(self, runner, metrics) -> None:
        backend, deferred = self.file_backend, _DeferredRemoval(
            self.file_backend)
        self.file_backend = deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        if deferred.pending and is_main_process():
            self._remove(deferred.pending)
            print_log(
                'Removed the superseded checkpoint(s) '
                f'{", ".join(map(str, deferred.pending))} after the new one '
                'was saved.',
                logger='current',
                level=logging.DEBUG)

"""Importing this module registers safe checkpoint loading with mmengine.

It exists for configs, whose only hook into a process is ``custom_imports``::

    custom_imports = dict(
        imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

``mmengine.Config.fromfile`` imports it, which calls
:func:`visionllama_mm.compat.register_safe_loading` (idempotent): runner
checkpoints, ``load_from`` / ``--resume`` and released layouts then load
with ``weights_only=True`` and the allow-list, whichever ``train.py`` runs
the config. Python code calls the function instead of importing this.
"""
from .compat import register_safe_loading

register_safe_loading()

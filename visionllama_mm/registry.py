"""Registries of visionllama_mm.

Each registry is a child of the mmengine root of the same kind, so its scope
is ``visionllama_mm`` and a config of any OpenMMLab library (mmpretrain,
mmseg, mmdet, mmagic) can name ``type='visionllama_mm.Something'`` without
``custom_imports``: mmengine imports this module, finds the child registry
named ``visionllama_mm`` under the root and imports its ``locations``.

Importing this module imports mmengine only (never mmdet, mmseg or mmagic).
"""
import logging
from importlib import import_module

from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry as _MMEngineRegistry


class Registry(_MMEngineRegistry):
    """mmengine ``Registry`` whose locations may be absent or optional.

    mmengine imports every location and raises on the first failure. Here a
    location package that does not exist (yet) is skipped, and one that
    fails to import (e.g. an optional dependency is missing) is logged as a
    warning naming the error, so the other locations still register.
    """

    def import_from_location(self) -> None:
        if self._imported:
            return
        for loc in self._locations:
            try:
                import_module(loc)
            except ModuleNotFoundError as err:
                level = logging.DEBUG if err.name == loc else logging.WARNING
                print_log(
                    f'visionllama_mm: could not import {loc} ({err})',
                    logger='current',
                    level=level)
            except ImportError as err:
                print_log(
                    f'visionllama_mm: could not import {loc} ({err})',
                    logger='current',
                    level=logging.WARNING)
        self._imported = True


# Sub-packages that register models. A location that cannot be imported
# (e.g. an optional dependency is missing) is only logged by mmengine.
MODEL_LOCATIONS = [
    'visionllama_mm.layers',
    'visionllama_mm.backbones',
    'visionllama_mm.selfsup',
    'visionllama_mm.necks',
    'visionllama_mm.generation',
    'visionllama_mm.multimodal',
    'visionllama_mm.engine',  # losses of the official recipes
]


def _child(name: str, parent: Registry, *locations: str) -> Registry:
    """A child of ``parent`` whose modules are imported from ``locations``
    the first time the registry is searched."""
    return Registry(name, parent=parent, locations=list(locations))


MODELS = _child('model', MMENGINE_MODELS, *MODEL_LOCATIONS)
DATASETS = _child('dataset', MMENGINE_DATASETS, 'visionllama_mm.datasets')
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS,
                       'visionllama_mm.engine')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS,
                    'visionllama_mm.datasets')
# no metric / visualizer of our own yet: the parents' entries serve
METRICS = _child('metric', MMENGINE_METRICS)
HOOKS = _child('hook', MMENGINE_HOOKS, 'visionllama_mm.engine')
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'visionllama_mm.engine')
OPTIM_WRAPPERS = _child('optim_wrapper', MMENGINE_OPTIM_WRAPPERS,
                        'visionllama_mm.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                    'visionllama_mm.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS,
                          'visionllama_mm.engine')
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS)
# FlexibleRunner strategies (the FSDP one with resuming fixed); the location
# is imported only when a config names one (it imports mmengine._strategy)
STRATEGIES = _child('strategy', MMENGINE_STRATEGIES,
                    'visionllama_mm.engine.strategies')
# FSDP auto-wrap policies and activation-checkpointing tests, looked up by
# mmengine's FSDP wrapper and strategy (visionllama_mm/engine/fsdp.py)
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS, 'visionllama_mm.engine')

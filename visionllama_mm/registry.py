"""Registries of visionllama_mm.

Each registry is a child of the mmengine root of the same kind, so its scope
is ``visionllama_mm`` and a config of any OpenMMLab library (mmpretrain,
mmseg, mmdet, mmagic) can name ``type='visionllama_mm.Something'`` without
``custom_imports``: mmengine imports this module, finds the child registry
named ``visionllama_mm`` under the root and imports its ``locations``.

Importing this module imports mmengine only (never mmdet, mmseg or mmagic).
"""
import importlib.util
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry as _Registry


class Registry(_Registry):
    """mmengine ``Registry`` that skips locations which do not exist.

    mmengine 0.10.7 raises on the first location that cannot be found, so a
    sub-package that is absent from a checkout (or not written yet) would
    break every build through this registry.
    """

    def import_from_location(self) -> None:
        self._locations = [
            loc for loc in self._locations
            if importlib.util.find_spec(loc) is not None
        ]
        super().import_from_location()


# Sub-packages that register models. A location that cannot be imported
# (e.g. an optional dependency is missing) is only logged by mmengine.
MODEL_LOCATIONS = [
    'visionllama_mm.layers',
    'visionllama_mm.backbones',
    'visionllama_mm.selfsup',
    'visionllama_mm.necks',
    'visionllama_mm.generation',
    'visionllama_mm.multimodal',
]

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, locations=MODEL_LOCATIONS)
DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, locations=['visionllama_mm.datasets'])
TRANSFORMS = Registry(
    'transform',
    parent=MMENGINE_TRANSFORMS,
    locations=['visionllama_mm.datasets'])
METRICS = Registry(
    'metric', parent=MMENGINE_METRICS, locations=['visionllama_mm.evaluation'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, locations=['visionllama_mm.engine'])
OPTIMIZERS = Registry(
    'optimizer', parent=MMENGINE_OPTIMIZERS,
    locations=['visionllama_mm.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper',
    parent=MMENGINE_OPTIM_WRAPPERS,
    locations=['visionllama_mm.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=['visionllama_mm.engine'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler',
    parent=MMENGINE_PARAM_SCHEDULERS,
    locations=['visionllama_mm.engine'])
VISUALIZERS = Registry(
    'visualizer',
    parent=MMENGINE_VISUALIZERS,
    locations=['visionllama_mm.visualization'])

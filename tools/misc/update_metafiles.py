"""Compute Parameters and FLOPs of every metafile entry from our models.

For each ``Config`` listed in the metafiles imported by ``model-index.yml``
the model is built from the config on the meta device (no memory, no
weights, no checkpoint loading: ``init_weights`` is never called) and

* ``Parameters`` = the number of elements of ``model.parameters()``: every
  parameter of the built model, trainable or frozen (a linear probe counts
  its frozen backbone), buffers excluded. Our models do not create the
  official, never-added ``pos_embed`` (spec-visionllama.md §3.6, §6.2), so
  the plain counts are the spec's "encoder parameters" convention plus the
  heads; DiT/SiT counts are the spec's minus that ``pos_embed``.
* ``FLOPs`` = multiply-accumulates of one forward pass at batch 1 and the
  recipe's test input size, counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors and halved:
  like fvcore and mmengine's ``get_model_complexity_info`` one
  multiply-add is one "FLOP". Only matrix products and convolutions
  (``mm``, ``addmm``, ``bmm``, ``baddbmm``, SDPA, ``convolution``) are
  counted; element-wise ops and norms are not. Attention products are
  counted (fvcore/mmengine skip ``scaled_dot_product_attention``).

What one forward pass is, per kind of model:

========================  ==================================================
classifier (mmpretrain)   ``model(x, mode='tensor')`` at the test crop
                          (``CenterCrop`` of the test pipeline, else the
                          backbone ``img_size``, else 224)
self-supervised (MAE)     ``model.extract_feat(x)``: the encoder on the
                          full, unmasked image at the backbone ``img_size``
                          (mmpretrain's convention)
segmentor (mmseg)         ``model._forward(x)``: backbone + neck + decode
                          head at the crop size; the auxiliary head (training
                          only) is not run
detector (mmdet)          backbone + neck + RPN head convolutions at the
                          padded test size (the RoI heads need proposals,
                          i.e. NMS, which does not run on meta tensors)
DiT-/SiT-LLaMA (mmagic)   one network evaluation ``net(x, t, y)`` on the
                          latent (no CFG doubling); the frozen VAE is not
                          part of the model
LLaMA-Adapter V2          FLOPs are not computed (a 7B decoder; they depend
                          on prompt and answer lengths). ``Parameters``
                          counts LLaMA-7B + CLIP-L/14 + the adapter, built
                          with the LLaMA-7B / CLIP-L/14 shapes instead of
                          the files the config points to; ``Adapter
                          Parameters`` counts the adapter file's tensors
========================  ==================================================

The tool rewrites only the ``Parameters`` / ``FLOPs`` (and ``Adapter
Parameters``) lines of the metafiles, so comments and layout stay.

Building and counting every config takes minutes, so the results are cached
in ``tools/misc/metafile_stats_cache.json`` (committed) under a fingerprint
of: the config file and its ``_base_`` files, the source files of the
visionllama_mm modules the model uses, the versions of torch and the
OpenMMLab libraries, and this tool's counting version. An entry is
recomputed when its fingerprint changes.

Usage::

    python tools/misc/update_metafiles.py            # update in place
    python tools/misc/update_metafiles.py --check    # exit 1 + diff if stale
    python tools/misc/update_metafiles.py --no-cache configs/x/metafile.yml
"""
import argparse
import ast
import contextlib
import copy
import difflib
import hashlib
import json
import os.path as osp
import re
import sys
from importlib import metadata as importlib_metadata
from typing import Dict, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_INDEX = osp.join(ROOT, 'model-index.yml')
DEFAULT_CACHE = osp.join(ROOT, 'tools', 'misc', 'metafile_stats_cache.json')

#: Bump when the counting convention changes (invalidates the cache).
COUNTING_VERSION = 1
#: Libraries whose code takes part in the counts.
LIBRARIES = ('torch', 'mmengine', 'mmpretrain', 'mmsegmentation', 'mmdet',
             'mmagic', 'transformers')

#: visionllama_mm modules left out of the fingerprints.
NOT_NUMERIC = ('visionllama_mm.registry', 'visionllama_mm.version',
               'visionllama_mm.zoo')

#: Vocabulary of the LLaMA-7B tokenizer: the LLaMA-Adapter V2 configs load
#: LLaMA-7B and CLIP ViT-L/14 from files (spec-llama-adapter-v2.md §2.1);
#: ``_merged_model_cfg`` builds the same shapes without them.
LLAMA_7B_VOCAB = 32000


# --------------------------------------------------------------- metafiles
def metafile_paths(index_path: str) -> List[str]:
    """The metafiles imported by a model index, absolute paths."""
    import yaml
    with open(index_path) as f:
        index = yaml.safe_load(f) or {}
    root = osp.dirname(osp.abspath(index_path))
    return [osp.join(root, p) for p in index.get('Import', [])]


def load_yaml(path: str) -> dict:
    import yaml
    with open(path) as f:
        return yaml.safe_load(f) or {}


# -------------------------------------------------------------- fingerprint
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: str) -> Optional[str]:
    try:
        with open(path, 'rb') as f:
            return _sha(f.read())
    except OSError:
        return None


def _base_entries(path: str) -> List[str]:
    """The ``_base_`` entries of a python config, read statically."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def _library_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return 'absent'


def config_files(config: str) -> Dict[str, str]:
    """The config and its local ``_base_`` chain: {relative path: sha}.

    Bases from a package (``mmseg::...``) are keyed by the package's
    version instead of their content.
    """
    files = {}
    todo = [osp.abspath(config)]
    while todo:
        path = todo.pop()
        key = osp.relpath(path, ROOT)
        if key in files:
            continue
        files[key] = _file_sha(path)
        if files[key] is None:
            continue
        for base in _base_entries(path):
            if '::' in base:
                pkg = base.split('::')[0]
                dist = {'mmseg': 'mmsegmentation'}.get(pkg, pkg)
                files[base] = _library_version(dist)
            else:
                todo.append(osp.normpath(osp.join(osp.dirname(path), base)))
    return files


def dependency_hashes(deps: List[str]) -> Dict[str, Optional[str]]:
    """Current hashes of the recorded package source files."""
    return {d: _file_sha(osp.join(ROOT, d)) for d in deps}


def fingerprint(config: str, deps: List[str]) -> str:
    """Key of a cache entry (see the module docstring)."""
    payload = dict(
        counting=COUNTING_VERSION,
        config=config_files(config),
        deps=dependency_hashes(deps),
        libs={name: _library_version(name)
              for name in LIBRARIES})
    return _sha(json.dumps(payload, sort_keys=True).encode())


def package_dependencies(model) -> List[str]:
    """visionllama_mm source files a built model depends on.

    The modules of the model's classes, closed over the visionllama_mm
    modules (and the modules of the objects) their globals refer to.
    """
    import inspect
    import types
    seen = set()
    todo = {type(m).__module__ for m in model.modules()}
    files = set()
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith('visionllama_mm'):
            continue
        seen.add(name)
        module = sys.modules.get(name)
        path = getattr(module, '__file__', None)
        # Registries and package __init__ files only wire things up: they
        # do not change the numbers (and every branch touches them).
        if not path or name in NOT_NUMERIC or \
                osp.basename(path) == '__init__.py':
            continue
        files.add(osp.relpath(osp.realpath(path), ROOT))
        for value in vars(module).values():
            if isinstance(value, types.ModuleType):
                todo.add(value.__name__)
            elif inspect.isclass(value) or inspect.isfunction(value):
                todo.add(getattr(value, '__module__', '') or '')
    return sorted(files)


# ----------------------------------------------------------------- building
def _class_names(obj) -> List[str]:
    return [c.__name__ for c in type(obj).__mro__]


def _find_transform(pipeline, names) -> Optional[dict]:
    for step in pipeline or []:
        step_type = str(step.get('type', '')).split('.')[-1]
        if step_type in names:
            return step
    return None


def _test_pipeline(cfg) -> list:
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        dataset = loader.get('dataset', {})
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']
        if dataset.get('pipeline'):
            return dataset['pipeline']
    return cfg.get('test_pipeline') or []


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def classifier_size(cfg) -> Tuple[int, int]:
    """(H, W) a classifier is tested at."""
    crop = _find_transform(_test_pipeline(cfg), ('CenterCrop', ))
    if crop is not None:
        h, w = _pair(crop['crop_size'])
        return h, w
    img_size = cfg.model.get('backbone', {}).get('img_size')
    if img_size is not None:
        return _pair(img_size)
    return 224, 224


def segmentor_size(cfg) -> Tuple[int, int]:
    """(H, W) of a segmentor's crop."""
    for size in (cfg.get('crop_size'), cfg.model.get('data_preprocessor',
                                                     {}).get('size'),
                 cfg.model.get('test_cfg', {}).get('crop_size')):
        if size is not None:
            return _pair(size)
    return 512, 512


def detector_size(cfg) -> Tuple[int, int]:
    """(H, W) of a detector's padded test input.

    A ``Pad`` to a fixed size wins; otherwise the ``Resize`` scale (long,
    short) kept in ratio gives short x long, padded to the preprocessor's
    ``pad_size_divisor``.
    """
    pipeline = _test_pipeline(cfg)
    pad = _find_transform(pipeline, ('Pad', ))
    if pad is not None and pad.get('size') is not None:
        w, h = _pair(pad['size'])
        return h, w
    resize = _find_transform(pipeline, ('Resize', 'RandomResize'))
    scale = (1333, 800) if resize is None else resize.get('scale')
    long_side, short_side = max(scale), min(scale)
    div = cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 1)

    def up(v):
        return -(-v // div) * div

    return up(short_side), up(long_side)


def _merged_model_cfg(cfg):
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if str(model_cfg.get('type', '')).endswith('LLaMAAdapterV2'):
        # The config points at local LLaMA / CLIP / tokenizer files: build
        # the same shapes without them.
        from visionllama_mm.multimodal.llama_adapter_v2.llm import \
            LLAMA_7B_PARAMS
        from visionllama_mm.multimodal.llama_adapter_v2.visual import \
            CLIP_VIT_L14_CONFIG
        model_cfg['llm'] = dict(
            params=dict(LLAMA_7B_PARAMS, vocab_size=LLAMA_7B_VOCAB))
        model_cfg['vision_encoder'] = dict(
            type='hf', config=dict(CLIP_VIT_L14_CONFIG))
        model_cfg['tokenizer'] = None
    return model_cfg


@contextlib.contextmanager
def _parameters_to_meta():
    """Move every parameter to the meta device as it is registered.

    For constructors that compute with tensors (e.g. a diffusion schedule
    checked with ``.item()``) and so cannot run under
    ``torch.device('meta')``: each parameter is created on the CPU and
    replaced by a meta copy at once, so at most one real parameter exists.
    """
    from torch import nn
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != 'meta':
            param = nn.Parameter(
                param.detach().to('meta'), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def build_on_meta(cfg):
    """Build ``cfg.model`` on the meta device in the config's scope.

    ``torch.device('meta')`` first; a constructor that needs real tensors
    is built with :func:`_parameters_to_meta` instead and then moved to
    meta.
    """
    import torch
    from mmengine.registry import MODELS, DefaultScope

    import visionllama_mm.registry  # noqa: F401  (our child registries)
    scope = cfg.get('default_scope', 'mmengine')
    with DefaultScope.overwrite_default_scope(scope):
        try:
            with torch.device('meta'):
                model = MODELS.build(_merged_model_cfg(cfg))
        except (RuntimeError, NotImplementedError) as err:
            if 'meta' not in str(err):
                raise
            with _parameters_to_meta():
                model = MODELS.build(_merged_model_cfg(cfg))
            model.to('meta')
    return model.eval()


@contextlib.contextmanager
def _meta_safe_autocast():
    """``torch.autocast('meta', ...)`` as a no-op while counting.

    Code that disables autocast around fp32 work (the RoPE tables) calls
    ``torch.autocast(x.device.type, enabled=False)``, which torch rejects
    for the meta device; on meta tensors there is nothing to cast anyway.
    """
    import torch
    autocast = torch.autocast

    def safe(device_type, *args, **kwargs):
        if device_type == 'meta':
            return contextlib.nullcontext()
        return autocast(device_type, *args, **kwargs)

    torch.autocast = safe
    try:
        yield
    finally:
        torch.autocast = autocast


def count_macs(fn) -> int:
    """Multiply-accumulates of ``fn()`` (FlopCounterMode FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), _meta_safe_autocast(), \
            FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops()) // 2


def profile_model(model, cfg) -> dict:
    """Parameters, FLOPs and the forward pass used, for a built model."""
    import torch

    def meta(*shape):
        return torch.empty(*shape, device='meta')

    names = _class_names(model)
    stats = dict(parameters=sum(p.numel() for p in model.parameters()))
    # No autograd: FlopCounterMode's module tracker would hook tensors that
    # require grad.
    model.requires_grad_(False)
    if 'LLaMAAdapterV2' in names:
        stats['adapter_parameters'] = sum(v.numel()
                                          for v in model.state_dict().values())
        stats.update(flops=None, forward='not computed (7B decoder)')
    elif 'ImageClassifier' in names:
        h, w = classifier_size(cfg)
        stats['flops'] = count_macs(
            lambda: model(meta(1, 3, h, w), mode='tensor'))
        stats['forward'] = f'classifier 1x3x{h}x{w}'
    elif 'BaseSelfSupervisor' in names:
        h, w = _pair(cfg.model.backbone.get('img_size', 224))
        stats['flops'] = count_macs(
            lambda: model.extract_feat(meta(1, 3, h, w)))
        stats['forward'] = f'encoder (no mask) 1x3x{h}x{w}'
    elif 'EncoderDecoder' in names:
        h, w = segmentor_size(cfg)
        stats['flops'] = count_macs(lambda: model._forward(meta(1, 3, h, w)))
        stats['forward'] = f'backbone+neck+decode head 1x3x{h}x{w}'
    elif 'BaseDetector' in names:
        h, w = detector_size(cfg)

        def det_forward():
            feats = model.extract_feat(meta(1, 3, h, w))
            if getattr(model, 'with_rpn', False):
                model.rpn_head(feats)

        stats['flops'] = count_macs(det_forward)
        stats['forward'] = f'backbone+neck+RPN head 1x3x{h}x{w}'
    elif hasattr(model, 'net') and hasattr(model.net, 'input_size'):
        net = model.net
        s, c = net.input_size, net.in_channels
        stats['flops'] = count_macs(lambda: net(
            meta(1, c, s, s), torch.zeros(1, device='meta'),
            torch.zeros(1, dtype=torch.long, device='meta')))
        stats['forward'] = f'one network evaluation 1x{c}x{s}x{s}'
    else:
        raise ValueError(f'do not know how to count FLOPs of {names[0]}; '
                         'teach tools/misc/update_metafiles.py')
    return stats


def compute_stats(config: str) -> dict:
    """Build the model of ``config`` on meta and count it."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    model = build_on_meta(cfg)
    stats = profile_model(model, cfg)
    stats['deps'] = package_dependencies(model)
    return stats


# -------------------------------------------------------------------- cache
class StatsCache:
    """Fingerprinted results, one entry per config (relative path)."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.entries = {}
        if path and osp.isfile(path):
            with open(path) as f:
                self.entries = json.load(f).get('entries', {})
        self.dirty = False

    def get(self, config: str) -> Optional[dict]:
        key = osp.relpath(osp.abspath(config), ROOT)
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.get('fingerprint') != fingerprint(config, entry['deps']):
            return None
        return entry

    def put(self, config: str, stats: dict) -> dict:
        key = osp.relpath(osp.abspath(config), ROOT)
        entry = dict(stats)
        entry['fingerprint'] = fingerprint(config, stats['deps'])
        self.entries[key] = entry
        self.dirty = True
        return entry

    def prune(self, keep) -> None:
        keep = {osp.relpath(osp.abspath(c), ROOT) for c in keep}
        for key in list(self.entries):
            if key not in keep:
                del self.entries[key]
                self.dirty = True

    def save(self) -> None:
        if not self.path or not self.dirty:
            return
        with open(self.path, 'w') as f:
            json.dump(
                dict(
                    note='written by tools/misc/update_metafiles.py',
                    entries=dict(sorted(self.entries.items()))),
                f,
                indent=1,
                sort_keys=True)
            f.write('\n')


def stats_for(config: str, cache: StatsCache, log=print) -> dict:
    entry = cache.get(config)
    if entry is None:
        log(f'computing {osp.relpath(config, ROOT)} ...')
        entry = cache.put(config, compute_stats(config))
    return entry


# ------------------------------------------------------------ text updating
_FIELDS = (('Parameters', 'parameters'), ('FLOPs', 'flops'),
           ('Adapter Parameters', 'adapter_parameters'))


def _yaml_scalar(value) -> str:
    return 'null' if value is None else str(value)


def render_metafile(text: str, values: Dict[str, dict]) -> str:
    """Set the computed fields of every model in a metafile's text.

    Args:
        text (str): The metafile.
        values (dict): Model name -> {'parameters': int, 'flops': int |
            None, 'adapter_parameters': int (optional)}.

    Returns:
        str: The new text; lines other than those fields are kept.
    """
    lines = text.splitlines(keepends=True)
    out = []
    name = None
    in_models = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r'^Models:\s*$', line):
            in_models = True
        elif re.match(r'^\S', line):
            in_models = False
        m = re.match(r'^(\s*)- Name:\s*(.+?)\s*$', line)
        if in_models and m:
            name = m.group(2).strip('\'"')
        meta = re.match(r'^(\s+)Metadata:\s*$', line)
        if in_models and meta and name in values:
            # Rewrite this model's Metadata block.
            out.append(line)
            indent = None
            block = []
            j = i + 1
            while j < len(lines):
                nxt = lines[j]
                if nxt.strip() == '' or nxt.lstrip().startswith('#'):
                    block.append(nxt)
                    j += 1
                    continue
                cur = len(nxt) - len(nxt.lstrip())
                if cur <= len(meta.group(1)):
                    break
                indent = cur if indent is None else indent
                block.append(nxt)
                j += 1
            indent = ' ' * (indent or len(meta.group(1)) + 2)
            wanted = {
                field: values[name][key]
                for field, key in _FIELDS if key in values[name]
            }
            done = set()
            for b in block:
                fm = re.match(r'^(\s*)([A-Za-z ]+):\s*(.*)$', b)
                if fm and fm.group(1) == indent and fm.group(2) in wanted:
                    field = fm.group(2)
                    out.append(
                        f'{indent}{field}: {_yaml_scalar(wanted[field])}\n')
                    done.add(field)
                else:
                    out.append(b)
            missing = [f for f in wanted if f not in done]
            # insert missing fields right after "Metadata:"
            if missing:
                pos = len(out) - len(block)
                for field in reversed(missing):
                    out.insert(
                        pos,
                        f'{indent}{field}: {_yaml_scalar(wanted[field])}\n')
            i = j
            continue
        out.append(line)
        i += 1
    return ''.join(out)


def update_metafile(path: str,
                    cache: StatsCache,
                    root: str = ROOT,
                    log=print) -> str:
    """New text of one metafile (not written).

    Args:
        path (str): The metafile.
        cache (StatsCache): Results cache.
        root (str): The folder ``Config`` paths are relative to (that of
            ``model-index.yml``). Defaults to the repository root.
        log (callable): Progress messages.
    """
    data = load_yaml(path)
    values = {}
    for model in data.get('Models') or []:
        config = model.get('Config')
        if not config:
            continue
        config = osp.join(root, config)
        if not osp.isfile(config):
            raise FileNotFoundError(f'{path}: model {model["Name"]} names a '
                                    f'config that does not exist: {config}')
        entry = stats_for(config, cache, log)
        values[model['Name']] = {k: entry[k] for _, k in _FIELDS if k in entry}
    with open(path) as f:
        text = f.read()
    return render_metafile(text, values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Compute Parameters / FLOPs of the metafile entries '
        'from the models (see the module docstring).')
    parser.add_argument(
        'metafiles',
        nargs='*',
        help='metafiles to process (default: all in the model index)')
    parser.add_argument('--model-index', default=DEFAULT_INDEX)
    parser.add_argument(
        '--check',
        action='store_true',
        help='do not write; exit 1 with a diff when a metafile is stale')
    parser.add_argument('--cache', default=DEFAULT_CACHE)
    parser.add_argument(
        '--no-cache', action='store_true', help='recompute everything')
    parser.add_argument(
        '--quiet', action='store_true', help='only report problems')
    args = parser.parse_args(argv)

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr)

    cache = StatsCache(None if args.no_cache else args.cache)
    if args.no_cache:
        cache.path = args.cache  # recompute, then store
    root = osp.dirname(osp.abspath(args.model_index))
    paths = [osp.abspath(p) for p in args.metafiles] or \
        metafile_paths(args.model_index)
    stale = []
    for path in paths:
        new = update_metafile(path, cache, root, log)
        with open(path) as f:
            old = f.read()
        if new == old:
            continue
        rel = osp.relpath(path, ROOT)
        if args.check:
            stale.append(rel)
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True), f'a/{rel}', f'b/{rel}'))
        else:
            with open(path, 'w') as f:
                f.write(new)
            log(f'updated {rel}')
    if args.check:
        if cache.dirty:
            log('note: the stats cache was stale for some configs; '
                '`python tools/misc/update_metafiles.py` refreshes it')
    elif not args.metafiles:
        configs = []
        for path in paths:
            configs += [
                osp.join(root, m['Config'])
                for m in load_yaml(path).get('Models') or [] if m.get('Config')
            ]
        cache.prune(configs)
    if not args.check:
        cache.save()
    if stale:
        print(
            '\nstale metafiles: ' + ', '.join(stale) +
            '\nrun `python tools/misc/update_metafiles.py` and commit the '
            'result',
            file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

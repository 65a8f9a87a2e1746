"""Compute Parameters and FLOPs of every metafile entry from our models.

Each ``Config`` of the metafiles in ``model-index.yml`` is built under
``torch.device('meta')`` (no memory, no weights, no ``init_weights``).
``Parameters`` = elements of ``model.parameters()``, frozen ones included,
buffers excluded (our models lack the official, never-added ``pos_embed``).
``FLOPs`` = multiply-accumulates of one forward pass at batch 1 and the
test input size: ``torch.utils.flop_counter.FlopCounterMode`` FLOPs on meta
tensors, halved (one multiply-add is one "FLOP", as in fvcore / mmengine).
It counts matrix products, convolutions and SDPA (which mmengine's
``get_model_complexity_info`` skips, hence not used), not element-wise ops.

The forward pass: a classifier runs ``model(x, mode='tensor')`` at the test
``CenterCrop`` (else the backbone ``img_size``, else 224); MAE runs
``extract_feat`` on the full, unmasked image at ``img_size``; a segmentor
``_forward`` (no auxiliary head) at the crop size; a detector its backbone,
neck and RPN head at the padded test size (RoI heads need NMS, which meta
tensors cannot run); DiT/SiT one ``net(x, t, y)`` on the latent (no CFG
doubling, no VAE). LLaMA-Adapter V2 gets no FLOPs (they depend on prompt
and answer lengths) and is built with the LLaMA-7B and CLIP-L/14 shapes
instead of the files its config names; ``Adapter Parameters`` counts the
adapter file's tensors.

Only these lines of the metafiles are rewritten (comments and layout stay).
Nothing is cached: counting every config takes minutes on a CPU. Usage::

    python tools/misc/update_metafiles.py             # update in place
    python tools/misc/update_metafiles.py --check     # exit 1 + diff if stale
    python tools/misc/update_metafiles.py configs/x/metafile.yml
"""
import argparse
import copy
import difflib
import os.path as osp
import re
import sys
from functools import partial
from typing import Dict, List, Optional, Tuple

import torch
import yaml

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_INDEX = osp.join(ROOT, 'model-index.yml')
#: Vocabulary of the LLaMA-7B tokenizer (the adapter configs load it).
LLAMA_7B_VOCAB = 32000
_FIELDS = (('Parameters', 'parameters'), ('FLOPs', 'flops'),
           ('Adapter Parameters', 'adapter_parameters'))


def load_yaml(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def metafile_paths(index_path: str) -> List[str]:
    """The metafiles imported by a model index, absolute paths."""
    root = osp.dirname(osp.abspath(index_path))
    return [osp.join(root, p) for p in load_yaml(index_path).get('Import', [])]


# ------------------------------------------------------------- input sizes
def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _transform(cfg, names) -> Optional[dict]:
    """The first step named in ``names`` of the test (or val) pipeline."""
    pipeline = cfg.get('test_pipeline') or []
    for key in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset', {})
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']
        if dataset.get('pipeline'):
            pipeline = dataset['pipeline']
            break
    return next((step for step in pipeline
                 if str(step.get('type', '')).split('.')[-1] in names), None)


def classifier_size(cfg) -> Tuple[int, int]:
    crop = _transform(cfg, ('CenterCrop', ))
    return _pair(crop['crop_size'] if crop else cfg.model.get('backbone', {}).
                 get('img_size', 224))


def segmentor_size(cfg) -> Tuple[int, int]:
    sizes = (cfg.get('crop_size'), cfg.model.get('data_preprocessor',
                                                 {}).get('size'),
             cfg.model.get('test_cfg', {}).get('crop_size'), 512)
    return _pair(next(size for size in sizes if size is not None))


def detector_size(cfg) -> Tuple[int, int]:
    """A fixed ``Pad`` size, else the ``Resize`` scale (long, short) as
    short x long, padded to the preprocessor's ``pad_size_divisor``."""
    pad = _transform(cfg, ('Pad', )) or {}
    if pad.get('size') is not None:
        return _pair(pad['size'])[::-1]
    resize = _transform(cfg, ('Resize', 'RandomResize'))
    scale = resize.get('scale') if resize else (1333, 800)
    div = cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 1)
    return tuple(-(-v // div) * div for v in (min(scale), max(scale)))


# --------------------------------------------------------------- counting
def build_on_meta(cfg):
    """Build ``cfg.model`` under ``torch.device('meta')`` in its scope."""
    from mmengine.registry import MODELS, DefaultScope

    import visionllama_mm.registry  # noqa: F401  (our child registries)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if str(model_cfg.get('type', '')).endswith('LLaMAAdapterV2'):
        # the config names local LLaMA / CLIP / tokenizer files: same shapes
        from visionllama_mm.multimodal.llama_adapter_v2.llm import \
            LLAMA_7B_PARAMS
        from visionllama_mm.multimodal.llama_adapter_v2.visual import \
            CLIP_VIT_L14_CONFIG
        model_cfg['llm'] = dict(
            params=dict(LLAMA_7B_PARAMS, vocab_size=LLAMA_7B_VOCAB))
        model_cfg['vision_encoder'] = dict(
            type='hf', config=dict(CLIP_VIT_L14_CONFIG))
        model_cfg['tokenizer'] = None
    scope = cfg.get('default_scope', 'mmengine')
    with DefaultScope.overwrite_default_scope(scope), torch.device('meta'):
        return MODELS.build(model_cfg).eval()


def count_macs(fn) -> int:
    """Multiply-accumulates of ``fn()`` (FlopCounterMode FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops()) // 2


def profile_model(model, cfg) -> dict:
    """{'parameters', 'flops'[, 'adapter_parameters']} of a built model."""
    names = {c.__name__ for c in type(model).__mro__}
    stats = dict(parameters=sum(p.numel() for p in model.parameters()))
    # no autograd: FlopCounterMode's module tracker would hook the tensors
    model.requires_grad_(False)
    if 'LLaMAAdapterV2' in names:
        return dict(
            stats,
            flops=None,
            adapter_parameters=sum(v.numel()
                                   for v in model.state_dict().values()))

    def img(hw, channels=3):
        return torch.empty(1, channels, *hw, device='meta')

    if 'ImageClassifier' in names:
        run = partial(model, img(classifier_size(cfg)), mode='tensor')
    elif 'BaseSelfSupervisor' in names:
        hw = _pair(cfg.model.backbone.get('img_size', 224))
        run = partial(model.extract_feat, img(hw))
    elif 'EncoderDecoder' in names:
        run = partial(model._forward, img(segmentor_size(cfg)))
    elif 'BaseDetector' in names:

        def run(x=img(detector_size(cfg))):
            feats = model.extract_feat(x)
            if getattr(model, 'with_rpn', False):
                model.rpn_head(feats)
    elif hasattr(getattr(model, 'net', None), 'input_size'):
        net, t = model.net, torch.zeros(1, device='meta')
        s = net.input_size
        run = partial(net, img((s, s), net.in_channels), t, t.long())
    else:
        raise ValueError(f'do not know how to count FLOPs of '
                         f'{type(model).__name__}; teach '
                         'tools/misc/update_metafiles.py')
    return dict(stats, flops=count_macs(run))


def compute_stats(config: str) -> dict:
    """Build the model of ``config`` on meta and count it."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    return profile_model(build_on_meta(cfg), cfg)


# ----------------------------------------------------------- text updating
def render_metafile(text: str, values: Dict[str, dict]) -> str:
    """Set the counted fields of the named models in a metafile's text.

    ``values`` maps a model name to {'parameters', 'flops' (may be None),
    'adapter_parameters' (optional)}. A field already in the model's
    ``Metadata`` is replaced in place, a missing one is inserted right after
    ``Metadata:``; every other line is kept.
    """
    lines, out = text.splitlines(keepends=True), []
    name, in_models, i = None, False, 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if re.match(r'^\S', line):
            in_models = re.match(r'^Models:\s*$', line) is not None
        m = re.match(r'^\s*- Name:\s*(.+?)\s*$', line)
        if in_models and m:
            name = m.group(1).strip('\'"')
        meta = re.match(r'^(\s+)Metadata:\s*$', line)
        if not (in_models and meta and name in values):
            continue
        indent, start = None, len(out)
        while i < len(lines):  # the Metadata block
            cur = lines[i]
            depth = len(cur) - len(cur.lstrip())
            if cur.strip() and not cur.lstrip().startswith('#'):
                if depth <= len(meta.group(1)):
                    break
                indent = depth if indent is None else indent
            out.append(cur)
            i += 1
        indent = ' ' * (indent or len(meta.group(1)) + 2)
        row = values[name]
        wanted = {
            f: 'null' if row[k] is None else row[k]
            for f, k in _FIELDS if k in row
        }
        for j in range(start, len(out)):
            fm = re.match(r'^(\s*)([A-Za-z ]+):', out[j])
            if fm and fm.group(1) == indent and fm.group(2) in wanted:
                out[j] = f'{indent}{fm.group(2)}: {wanted.pop(fm.group(2))}\n'
        out[start:start] = [f'{indent}{f}: {v}\n' for f, v in wanted.items()]
    return ''.join(out)


def update_metafile(path: str, root: str = ROOT, log=print):
    """(old, new) text of a metafile (not written); configs under root."""
    values = {}
    for model in load_yaml(path).get('Models') or []:
        if not model.get('Config'):
            continue
        config = osp.join(root, model['Config'])
        if not osp.isfile(config):
            raise FileNotFoundError(f'{path}: model {model["Name"]} names a '
                                    f'config that does not exist: {config}')
        log(f'counting {model["Config"]} ...')
        values[model['Name']] = compute_stats(config)
    with open(path) as f:
        old = f.read()
    return old, render_metafile(old, values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('metafiles', nargs='*', help='default: all indexed')
    parser.add_argument('--model-index', default=DEFAULT_INDEX)
    parser.add_argument(
        '--check', action='store_true', help='exit 1 + diff if stale')
    parser.add_argument('--quiet', action='store_true')
    args = parser.parse_args(argv)
    log = (lambda msg: None) if args.quiet else partial(print, file=sys.stderr)
    root = osp.dirname(osp.abspath(args.model_index))
    stale = []
    for path in [osp.abspath(p) for p in args.metafiles] or \
            metafile_paths(args.model_index):
        old, new = update_metafile(path, root, log)
        rel = osp.relpath(path, root)
        if new != old and args.check:
            stale.append(rel)
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), f'a/{rel}',
                    f'b/{rel}'))
        elif new != old:
            with open(path, 'w') as f:
                f.write(new)
            log(f'updated {rel}')
    if stale:
        print(
            f'stale metafiles: {", ".join(stale)}; run `python '
            'tools/misc/update_metafiles.py` and commit the result',
            file=sys.stderr)
    return int(bool(stale))


if __name__ == '__main__':
    sys.exit(main())

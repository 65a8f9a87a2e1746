"""Throughput, MFU and peak memory of our models against their peers.

Each ``--model`` names a group: one of our models and the peers of the same
shape, all measured in the same run with the same input, each eager and
compiled (``torch.compile``):

* ``plain``: :class:`visionllama_mm.backbones.VisionLLaMA` vs the official
  mmpretrain-fork ``VisionLLaMA`` (``--official-root``), timm's EVA02 (the
  closest published RoPE + SwiGLU ViT) and mmpretrain's
  ``VisionTransformer``. Same width, depth, heads and patch; the SwiGLU
  width follows ``--ffn-hidden-rule`` (``llama``: parameter-matched with
  ViT and EVA02, the official model is built with the same width;
  ``mmpretrain``: the official, 3x wider FFN).
* ``pyramid``: :class:`visionllama_mm.backbones.PyramidVisionLLaMA`
  (classifier face, no head) vs the official deit ``PyramidVisionLLaMA``
  (``--official-root``) and mmpretrain's Twins-SVT (``SVT``) of the same
  size (``--arch s|b|l``; SVT with ``qkv_bias=True`` like ours).
* ``dit``: :class:`visionllama_mm.generation.DiTLLaMA` (``--arch b|l|xl``,
  patch 4) on SD-VAE latents of ``--img-size / 8`` vs the official
  DiT-LLaMA and DiT (``dit/models.py`` of ``--official-root``) and the
  pip-installable DiT of diffusers (``DiTTransformer2DModel``).

``--baseline-root`` adds a ``baseline`` peer: our model built from another
checkout of this package (e.g. ``git worktree add /tmp/before <commit>``),
so that a change to the code shows as the ratio ours / baseline measured
in the same run.

``--official-root`` is a checkout of github.com/Meituan-AutoML/VisionLLaMA
(not pip-installable); its code is imported from there in the worker that
measures it, never copied. A peer that cannot be built (no checkout, a
missing or incompatible package) is reported as unavailable with the reason
and the rest of the group is still measured.

For every model it reports the forward throughput (no autograd), the
training-step throughput (forward, backward and an SGD step), the FLOPs
(``torch.utils.flop_counter``; the GFLOPs column counts one multiply-add as
one, like the papers), the model FLOPs utilisation of the training step
(MFU: model FLOPs per second over the device's peak, see
:data:`PEAK_TFLOPS` and ``--peak-tflops``), the number of graph breaks
under ``torch.compile``, and the peak memory: ``max_memory_allocated`` on
GPU, the growth of the peak resident set size of the worker on CPU. Every
(model, mode) is measured in its own fresh worker process (this script with
``--worker``) so that peaks and compiled code do not mix; ``--rounds``
repeats all workers, interleaved and in alternating order, and throughput
is the batch size over the median iteration time of all rounds (robust to
a slow phase of a shared machine, which hits one worker, not all).

On CUDA, ``--amp`` runs bf16 autocast (``--amp-dtype``) and SDPA is limited
to the flash / memory-efficient kernels (``--sdpa-backends``).

Example (GPU)::

    python tools/analysis_tools/benchmark_backbone.py --model plain \\
        --arch base --batch-size 64 --device cuda --amp --rounds 3
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULT_TAG = '[benchmark-result] '
MODES = ('eager', 'compiled')
PHASES = ('fwd', 'train')
SDPA_BACKENDS = ('flash', 'efficient', 'cudnn', 'math')
AMP_DTYPES = ('bfloat16', 'float16')

# Dense (no sparsity) tensor-core peaks in TFLOP/s by device name, for the
# autocast dtypes and for plain fp32; matched in order, first hit wins, on
# ``torch.cuda.get_device_name()``. Vendor data sheets (SXM parts unless
# named).
PEAK_TFLOPS: Tuple[Tuple[str, Dict[str, float]], ...] = (
    ('H100 PCIe', dict(bfloat16=756., float16=756., float32=51.)),
    ('H100 NVL', dict(bfloat16=835., float16=835., float32=60.)),
    ('H200', dict(bfloat16=989., float16=989., float32=67.)),
    ('H100', dict(bfloat16=989., float16=989., float32=67.)),
    ('H800', dict(bfloat16=989., float16=989., float32=67.)),
    ('GH200', dict(bfloat16=989., float16=989., float32=67.)),
    ('A100', dict(bfloat16=312., float16=312., float32=19.5)),
    ('A800', dict(bfloat16=312., float16=312., float32=19.5)),
    ('L40S', dict(bfloat16=362., float16=362., float32=91.6)),
    ('L4', dict(bfloat16=121., float16=121., float32=30.3)),
    ('V100', dict(float16=125., float32=15.7)),
)


def peak_tflops(device_name: str, dtype: str) -> Optional[float]:
    """Dense peak TFLOP/s of ``device_name`` for ``dtype`` (None: unknown).

    Args:
        device_name (str): e.g. ``torch.cuda.get_device_name()``.
        dtype (str): ``'bfloat16'``, ``'float16'`` or ``'float32'``.
    """
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(dtype)
    return None


def mfu(flops_per_item: float, items_per_s: float,
        peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: achieved FLOP/s over ``peak`` TFLOP/s."""
    if not peak or flops_per_item <= 0 or items_per_s <= 0:
        return None
    return flops_per_item * items_per_s / (peak * 1e12)


# ---------------------------------------------------------------------------
# subjects: what each worker builds
# ---------------------------------------------------------------------------


class Subject(NamedTuple):
    """A model to measure and how to feed it.

    ``inputs(batch, device)`` returns the positional arguments of one call;
    the training loss is the mean square of the (first) output.
    """
    name: str
    model: torch.nn.Module
    inputs: Callable[[int, torch.device], tuple]


def _image_inputs(args) -> Callable:

    def inputs(batch, device):
        return (torch.randn(
            batch, 3, args.img_size, args.img_size, device=device), )

    return inputs


def _latent_inputs(args, num_classes: int = 1000) -> Callable:
    size = args.img_size // 8  # SD-VAE latents

    def inputs(batch, device):
        return (torch.randn(batch, 4, size, size, device=device),
                torch.randint(0, 1000, (batch, ), device=device),
                torch.randint(0, num_classes, (batch, ), device=device))

    return inputs


def _official_path(args, sub: str) -> str:
    """``--official-root/sub``, put first on ``sys.path`` of this worker
    (after ``--official-site``, the official code's own dependencies)."""
    if not args.official_root:
        raise RuntimeError('needs --official-root (a checkout of '
                           'Meituan-AutoML/VisionLLaMA)')
    path = osp.join(args.official_root, sub)
    if not osp.isdir(path):
        raise RuntimeError(f'--official-root {args.official_root!r} has no '
                           f'{sub}/ folder')
    sys.path.insert(0, path)
    if args.official_site:
        sys.path.insert(0, args.official_site)
    return path


def _plain_arch(args) -> dict:
    from visionllama_mm.backbones import VisionLLaMA
    if args.arch == 'custom':
        return dict(
            embed_dims=args.embed_dims,
            num_layers=args.depth,
            num_heads=args.num_heads,
            feedforward_channels=4 * args.embed_dims)
    if args.arch not in VisionLLaMA.arch_zoo:
        raise ValueError(f'--arch must be custom or one of '
                         f'{sorted(VisionLLaMA.arch_zoo)}, got {args.arch}')
    return dict(VisionLLaMA.arch_zoo[args.arch])


def plain_ours(args) -> Subject:
    from visionllama_mm.backbones import VisionLLaMA
    return Subject(
        'VisionLLaMA',
        VisionLLaMA(
            arch=_plain_arch(args),
            img_size=args.img_size,
            patch_size=args.patch_size,
            ffn_hidden_rule=args.ffn_hidden_rule,
            out_type='avg_featmap',
            final_norm=False), _image_inputs(args))


def plain_official(args) -> Subject:
    # the official code is a fork of mmpretrain 1.2: first on the path of
    # this (fresh) worker, `mmpretrain` is the fork
    _official_path(args, 'mmpretrain')
    import mmpretrain
    if not osp.abspath(mmpretrain.__file__).startswith(
            osp.abspath(args.official_root)):
        raise RuntimeError('mmpretrain was imported before the official '
                           'fork could be put first on sys.path')
    from mmpretrain.models.backbones.vision_llama import VisionLLaMA
    arch = _plain_arch(args)
    # the official SwiGLU width is ceil256(8 / 3 * feedforward_channels):
    # the llama rule (ceil256(8 / 3 * C)) is feedforward_channels = C
    arch = dict(
        embed_dims=arch['embed_dims'],
        num_layers=arch['num_layers'],
        num_heads=arch['num_heads'],
        feedforward_channels=arch['embed_dims']
        if args.ffn_hidden_rule == 'llama' else arch['feedforward_channels'])
    model = VisionLLaMA(
        arch=arch,
        img_size=args.img_size,
        patch_size=args.patch_size,
        out_type='avg_featmap',
        with_cls_token=False,
        final_norm=False)
    model.init_weights()
    return Subject('official VisionLLaMA', model, _image_inputs(args))


def plain_timm_eva02(args) -> Subject:
    import timm
    arch = _plain_arch(args)
    model = timm.create_model(
        'eva02_base_patch14_224',  # patch and size set below
        pretrained=False,
        img_size=args.img_size,
        patch_size=args.patch_size,
        embed_dim=arch['embed_dims'],
        depth=arch['num_layers'],
        num_heads=arch['num_heads'],
        num_classes=0,
        global_pool='avg')
    return Subject('timm EVA02', model, _image_inputs(args))


def plain_mmpretrain_vit(args) -> Subject:
    from mmpretrain.models import VisionTransformer
    return Subject(
        'mmpretrain ViT',
        VisionTransformer(
            arch=_plain_arch(args),
            img_size=args.img_size,
            patch_size=args.patch_size,
            out_type='avg_featmap',
            with_cls_token=False,
            final_norm=False), _image_inputs(args))


def _pyramid_arch(args) -> str:
    from visionllama_mm.backbones import PyramidVisionLLaMA
    if args.arch not in PyramidVisionLLaMA.arch_zoo:
        raise ValueError(f'--arch must be one of '
                         f'{sorted(PyramidVisionLLaMA.arch_zoo)} for the '
                         f'pyramid group, got {args.arch}')
    return {'s': 'small', 'b': 'base', 'l': 'large'}.get(args.arch, args.arch)


def pyramid_ours(args) -> Subject:
    from visionllama_mm.backbones import PyramidVisionLLaMA
    arch = _pyramid_arch(args)
    return Subject(f'PyramidVisionLLaMA-{arch}',
                   PyramidVisionLLaMA(arch=arch, out_type='avg_featmap'),
                   _image_inputs(args))


def _alias_torch_six() -> None:
    """timm 0.3 (the official deit code's, from ``--official-site``) imports
    ``torch._six``, removed in torch 2.0, for aliases of the standard
    library; provide them, so that the official model can be built beside a
    current torch (its computation does not use them)."""
    if 'torch._six' not in sys.modules:
        import collections.abc
        import math
        import types
        sys.modules['torch._six'] = types.SimpleNamespace(
            container_abcs=collections.abc,
            string_classes=(str, bytes),
            int_classes=int,
            inf=math.inf)


def pyramid_official(args) -> Subject:
    # deit/my_models.py imports its neighbours (utils, pos_embed) by name
    # and builds on timm 0.3's VisionTransformer (positional arguments):
    # --official-site must hold timm 0.3.2
    _official_path(args, 'deit')
    _alias_torch_six()
    import my_models
    arch = _pyramid_arch(args)
    factory = getattr(my_models, f'pllama_wols_{arch}_patch16')
    model = factory(num_classes=0, img_size=args.img_size)
    return Subject(f'official PyramidVisionLLaMA-{arch}', model,
                   _image_inputs(args))


def pyramid_mmpretrain_svt(args) -> Subject:
    from mmpretrain.models import SVT
    arch = _pyramid_arch(args)
    model = SVT(
        arch=arch,
        qkv_bias=True,
        out_indices=(3, ),
        norm_after_stage=[False, False, False, True])
    model.init_weights()
    return Subject(f'mmpretrain SVT-{arch}', model, _image_inputs(args))


DIT_ARCHS = {
    'b': dict(depth=12, hidden_size=768, num_heads=12),
    'l': dict(depth=24, hidden_size=1024, num_heads=16),
    'xl': dict(depth=28, hidden_size=1152, num_heads=16),
}


def _dit_arch(args) -> dict:
    if args.arch == 'custom':
        return dict(
            depth=args.depth,
            hidden_size=args.embed_dims,
            num_heads=args.num_heads)
    if args.arch not in DIT_ARCHS:
        raise ValueError(f'--arch must be custom or one of '
                         f'{sorted(DIT_ARCHS)} for the dit group, got '
                         f'{args.arch}')
    return DIT_ARCHS[args.arch]


def _dit_name(args, base: str) -> str:
    return f'{base}-{args.arch.upper()}/{args.dit_patch_size}'


def dit_ours(args) -> Subject:
    from visionllama_mm.generation.models import DiTLLaMA
    model = DiTLLaMA(
        input_size=args.img_size // 8,
        patch_size=args.dit_patch_size,
        **_dit_arch(args))
    return Subject(_dit_name(args, 'DiT-LLaMA'), model, _latent_inputs(args))


def _official_dit(args, cls_name: str, base: str) -> Subject:
    # dit/models.py subclasses timm's Attention with the positional
    # arguments of timm 0.9 (timm >= 1 reads them differently)
    _official_path(args, 'dit')
    import models
    model = getattr(models, cls_name)(
        input_size=args.img_size // 8,
        patch_size=args.dit_patch_size,
        **_dit_arch(args))
    return Subject(_dit_name(args, base), model, _latent_inputs(args))


def dit_official(args) -> Subject:
    return _official_dit(args, 'DiTLLaMA', 'official DiT-LLaMA')


def dit_official_dit(args) -> Subject:
    return _official_dit(args, 'DiT', 'official DiT')


class _SampleOf(torch.nn.Module):
    """Call a diffusers model with positional inputs, return the tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, t, y):
        return self.model(x, timestep=t, class_labels=y, return_dict=False)[0]


def dit_diffusers(args) -> Subject:
    from diffusers.models import DiTTransformer2DModel
    arch = _dit_arch(args)
    model = DiTTransformer2DModel(
        num_attention_heads=arch['num_heads'],
        attention_head_dim=arch['hidden_size'] // arch['num_heads'],
        in_channels=4,
        out_channels=8,
        num_layers=arch['depth'],
        sample_size=args.img_size // 8,
        patch_size=args.dit_patch_size,
        num_embeds_ada_norm=1000)
    return Subject(
        _dit_name(args, 'diffusers DiT'), _SampleOf(model),
        _latent_inputs(args))


# group -> {peer key: builder}; the first entry is ours
GROUPS: Dict[str, Dict[str, Callable[..., Subject]]] = {
    'plain': {
        'ours': plain_ours,
        'official': plain_official,
        'timm-eva02': plain_timm_eva02,
        'mmpretrain-vit': plain_mmpretrain_vit,
    },
    'pyramid': {
        'ours': pyramid_ours,
        'official': pyramid_official,
        'mmpretrain-svt': pyramid_mmpretrain_svt,
    },
    'dit': {
        'ours': dit_ours,
        'official': dit_official,
        'official-dit': dit_official_dit,
        'diffusers-dit': dit_diffusers,
    },
}

# ---------------------------------------------------------------------------
# measurement (runs in a worker process)
# ---------------------------------------------------------------------------


def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup: int, iters: int) -> Tuple[List[float], float]:
    """Seconds of each of ``iters`` calls after ``warmup`` calls, and of the
    first call (compilation, when compiled)."""
    first = 0.
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times, first


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _loss(out):
    return _first(out).float().pow(2).mean()


def _register_cpu_sdpa_flops():
    """Count CPU SDPA kernels like the CUDA flash ones (same leading
    arguments; torch ships no formula for the CPU kernels)."""
    from torch.utils.flop_counter import flop_registry
    aten = torch.ops.aten
    pairs = (('_scaled_dot_product_flash_attention_for_cpu',
              aten._scaled_dot_product_flash_attention),
             ('_scaled_dot_product_flash_attention_for_cpu_backward',
              aten._scaled_dot_product_flash_attention_backward))
    for name, cuda_op in pairs:
        op = getattr(aten, name, None)
        if op is not None and op not in flop_registry:
            flop_registry[op] = flop_registry[cuda_op]


def count_flops(subject: Subject, device: torch.device) -> Tuple[int, int]:
    """FLOPs of one item's forward and of one item's training step.

    Counted on the eager model with a batch of one by
    ``torch.utils.flop_counter`` (matrix products, convolutions and
    attention; two FLOPs per multiply-add).
    """
    from torch.utils.flop_counter import FlopCounterMode
    _register_cpu_sdpa_flops()
    model = subject.model
    inputs = subject.inputs(1, device)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    fwd = counter.get_total_flops()
    model.train()
    with FlopCounterMode(display=False) as counter:
        _loss(model(*inputs)).backward()
    model.zero_grad(set_to_none=True)
    return fwd, counter.get_total_flops()


def sdpa_context(args, device: torch.device):
    """Limit SDPA to ``--sdpa-backends`` on CUDA (no-op elsewhere)."""
    if device.type != 'cuda':
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    names = dict(
        flash=SDPBackend.FLASH_ATTENTION,
        efficient=SDPBackend.EFFICIENT_ATTENTION,
        cudnn=SDPBackend.CUDNN_ATTENTION,
        math=SDPBackend.MATH)
    return sdpa_kernel([names[b] for b in args.sdpa_backends])


# self-time categories of a profiled step (first match of the op name)
OP_CATEGORIES = (
    ('attention', ('scaled_dot_product', 'flash_attention',
                   'efficient_attention', 'cudnn_attention')),
    ('matmul', ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm',
                'gemm', 'cutlass', 'sm90_xmma', 'ampere_')),
    ('conv', ('convolution', 'conv2d', 'mkldnn_conv')),
)


def op_category(name: str) -> str:
    """``attention``, ``matmul``, ``conv`` or ``other`` for an op name."""
    for category, keys in OP_CATEGORIES:
        if any(key in name for key in keys):
            return category
    return 'other'


def profile_step(step: Callable, device: torch.device, top: int) -> dict:
    """Share of the self time of one ``step()`` per op category, and the
    ``top`` ops by self time (``torch.profiler``; device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    attr = ('self_device_time_total'
            if device.type == 'cuda' else 'self_cpu_time_total')
    events = [(e.key, getattr(e, attr)) for e in prof.key_averages()]
    events = [(k, t) for k, t in events if t > 0]
    total = sum(t for _, t in events) or 1.
    shares: Dict[str, float] = {}
    for key, t in events:
        category = op_category(key)
        shares[category] = shares.get(category, 0.) + t / total
    events.sort(key=lambda e: -e[1])
    return dict(shares=shares, top=[(k, t / total) for k, t in events[:top]])


def _device_peak(args, device: torch.device) -> Optional[float]:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != 'cuda':
        return None
    dtype = args.amp_dtype if args.amp else 'float32'
    return peak_tflops(torch.cuda.get_device_name(device), dtype)


def measure(args, key: str, mode: str) -> dict:
    """Build one model of the group and measure it eager or compiled."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if key == 'baseline':  # our builder, from --baseline-root (run_worker)
        import visionllama_mm
        subject = GROUPS[args.model]['ours'](args)
        subject = subject._replace(
            name=f'{subject.name} (baseline '
            f'{osp.dirname(osp.dirname(visionllama_mm.__file__))})')
    else:
        subject = GROUPS[args.model][key](args)
    subject = subject._replace(model=subject.model.to(device))
    model = subject.model
    params = sum(p.numel() for p in model.parameters())
    fwd_flops, train_flops = count_flops(subject, device)
    result = dict(
        key=key,
        mode=mode,
        name=subject.name,
        params=params,
        gflops=fwd_flops / 2 / 1e9,  # multiply-adds, the papers' GFLOPs
        train_flops=train_flops,
        peak_tflops=_device_peak(args, device))
    x = subject.inputs(args.batch_size, device)
    amp = torch.autocast(
        device.type, dtype=getattr(torch, args.amp_dtype), enabled=args.amp)
    run = model
    if mode == 'compiled':
        torch._dynamo.utils.counters.clear()
        run = torch.compile(
            model, backend=args.compile_backend, mode=args.compile_mode)

    def forward():
        # no_grad, not inference_mode: dynamo's guards on tensors made
        # under inference_mode fail for some models (mmcv's DropPath)
        with torch.no_grad(), amp, sdpa_context(args, device):
            run(*x)

    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def train_step():
        with amp, sdpa_context(args, device):
            loss = _loss(run(*x))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for kind, fn, training in (('fwd', forward, False), ('train', train_step,
                                                         True)):
        if kind not in args.phases:
            result[f'{kind}_times'], result[f'{kind}_first_s'] = [], 0.
            result[f'{kind}_mem'] = 0.
            continue
        model.train(training)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            base = _rss_mib()
        times, first = _timed(fn, device, max(args.warmup, 1), args.iters)
        result[f'{kind}_times'] = times
        result[f'{kind}_first_s'] = first
        if device.type == 'cuda':
            result[f'{kind}_mem'] = (torch.cuda.max_memory_allocated(device) -
                                     base) / 2**20
        else:
            result[f'{kind}_mem'] = _peak_rss_mib() - base
    if args.profile and 'train' in args.phases:
        result['profile'] = profile_step(train_step, device, args.profile)
    if mode == 'compiled':
        counters = torch._dynamo.utils.counters
        result['graph_breaks'] = sum(counters['graph_break'].values())
    return result


def worker_argv(argv: List[str], key: str, mode: str) -> List[str]:
    return list(argv) + ['--worker', key, '--worker-mode', mode]


def run_worker(argv: List[str], key: str, mode: str) -> dict:
    """Measure one (model, mode) in a fresh worker process.

    Returns the measurement, or ``dict(key, mode, error)`` when the worker
    failed (e.g. a peer that cannot be imported).
    """
    cmd = [sys.executable, osp.abspath(__file__)] + worker_argv(
        argv, key, mode)
    env = dict(os.environ)
    root = parse_args(argv).baseline_root if key == 'baseline' else ROOT
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, env.get('PYTHONPATH')) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [
        line for line in proc.stdout.splitlines()
        if line.startswith(RESULT_TAG)
    ]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return dict(
            key=key, mode=mode, error=tail[-1] if tail else 'no output')
    return json.loads(lines[-1][len(RESULT_TAG):])


def _median(times: List[float]) -> str:
    return f'{statistics.median(times):.3f}' if times else '-'


def run_rounds(argv: List[str], jobs: List[Tuple[str, str]], rounds: int,
               batch_size: int) -> List[dict]:
    """Run every (key, mode) job once per round, in a fresh worker each.

    Rounds alternate the order of the jobs. Throughput is the batch size
    over the median iteration time of all rounds, so a slow phase of a
    shared machine moves the ratios less than a mean over one run would;
    peak memory is the largest of the rounds. A job that fails in any
    round is reported with its error.
    """
    runs: Dict[Tuple[str, str], List[dict]] = {job: [] for job in jobs}
    for r in range(rounds):
        for job in (jobs if r % 2 == 0 else jobs[::-1]):
            runs[job].append(run_worker(argv, *job))
            done = runs[job][-1]
            print(
                f'[round {r + 1}/{rounds}] {job[0]} {job[1]}: ' +
                (f'failed: {done["error"]}' if 'error' in done else
                 f'median train step {_median(done["train_times"])}s'),
                file=sys.stderr,
                flush=True)
            # the raw measurement too, so that an interrupted run keeps it
            print(RESULT_TAG + json.dumps(done), file=sys.stderr, flush=True)
    results = []
    for job in jobs:
        mine = runs[job]
        errors = [m['error'] for m in mine if 'error' in m]
        if errors:
            results.append(dict(key=job[0], mode=job[1], error=errors[0]))
            continue
        result = {k: v for k, v in mine[0].items() if not k.endswith('_times')}
        for kind in ('fwd', 'train'):
            times = [t for m in mine for t in m[f'{kind}_times']]
            result[f'{kind}_ips'] = (
                batch_size / statistics.median(times) if times else 0.)
            result[f'{kind}_mem'] = max(m[f'{kind}_mem'] for m in mine)
            result[f'{kind}_first_s'] = max(m[f'{kind}_first_s'] for m in mine)
        result['train_mfu'] = mfu(result['train_flops'], result['train_ips'],
                                  result['peak_tflops'])
        results.append(result)
    return results


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float('nan')


def ratio_rows(results: List[dict]) -> List[dict]:
    """Ours over every peer in the same mode, and compiled over eager.

    Throughput ratios (> 1: the numerator is faster); ``*_per_flop`` also
    multiplies by the FLOP ratio (work-normalised: separates implementation
    speed from the extra work an architecture does).
    """
    ok = {(r['key'], r['mode']): r for r in results if 'error' not in r}
    keys = list(dict.fromkeys(r['key'] for r in results))
    rows = []
    for mode in MODES:
        ours = ok.get(('ours', mode))
        if ours is None:
            continue
        for key in keys[1:]:
            peer = ok.get((key, mode))
            if peer is None:
                continue
            flops = _ratio(ours['gflops'], peer['gflops'])
            row = dict(
                kind='peer', mode=mode, num=ours['name'], den=peer['name'])
            for k in ('fwd', 'train'):
                row[k] = _ratio(ours[f'{k}_ips'], peer[f'{k}_ips'])
                row[f'{k}_per_flop'] = row[k] * flops
            rows.append(row)
    for key in keys:
        eager, comp = ok.get((key, 'eager')), ok.get((key, 'compiled'))
        if eager is None or comp is None:
            continue
        row = dict(
            kind='compile', mode='compiled / eager', num=comp['name'], den='')
        for k in ('fwd', 'train'):
            row[k] = _ratio(comp[f'{k}_ips'], eager[f'{k}_ips'])
        rows.append(row)
    return rows


def _fmt(value, spec: str = '.2f') -> str:
    return '-' if value is None else format(value, spec)


def format_table(results: List[dict], args) -> str:
    mem = 'GPU MiB' if args.device.startswith('cuda') else 'RSS MiB'
    precision = f'{args.amp_dtype} autocast' if args.amp else 'fp32'
    lines = [
        f'{args.model}: batch {args.batch_size}, {args.img_size} px, '
        f'device {args.device}, {precision}; median of {args.rounds} x '
        f'{args.iters} iterations, fresh workers interleaved',
        f'| model | mode | params (M) | GFLOPs | fwd img/s | train img/s | '
        f'train MFU % | graph breaks | compile s (fwd / train) | '
        f'fwd peak {mem} | train peak {mem} |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in results:
        if 'error' in r:
            lines.append(f'| {r["key"]} | {r["mode"]} | unavailable: '
                         f'{r["error"]} | | | | | | | | |')
            continue
        train_mfu = r.get('train_mfu')
        compiled = r['mode'] == 'compiled'
        lines.append(
            f'| {r["name"]} | {r["mode"]} | {r["params"] / 1e6:.2f} | '
            f'{r["gflops"]:.2f} | {r["fwd_ips"]:.1f} | '
            f'{r["train_ips"]:.1f} | '
            f'{_fmt(None if train_mfu is None else 100 * train_mfu, ".1f")} '
            f'| {r.get("graph_breaks", "-")} | ' +
            (f'{r["fwd_first_s"]:.0f} / {r["train_first_s"]:.0f}' if compiled
             else '-') + f' | {r["fwd_mem"]:.0f} | {r["train_mem"]:.0f} |')
    profiled = [r for r in results if r.get('profile')]
    if profiled:
        lines += [
            '',
            'training-step profile: share of the self time by op category, '
            'then the top ops',
            '| model | mode | matmul | attention | conv | other | top ops |',
            '|---|---|---|---|---|---|---|',
        ]
        for r in profiled:
            shares, top = r['profile']['shares'], r['profile']['top']
            ops = ', '.join(f'{k} {100 * v:.0f}%' for k, v in top)
            lines.append(f'| {r["name"]} | {r["mode"]} | ' + ' | '.join(
                f'{100 * shares.get(c, 0.):.0f}%'
                for c in ('matmul', 'attention', 'conv', 'other')) +
                         f' | {ops} |')
    rows = ratio_rows(results)
    if rows:
        lines += [
            '',
            'ratios (throughput, > 1: the first is faster; per FLOP: times '
            'the FLOP ratio)',
            '| ratio | mode | fwd | train | fwd per FLOP | train per FLOP |',
            '|---|---|---|---|---|---|',
        ]
        for row in rows:
            title = (f'{row["num"]} / {row["den"]}'
                     if row['kind'] == 'peer' else row['num'])
            lines.append(f'| {title} | {row["mode"]} | {row["fwd"]:.2f} | '
                         f'{row["train"]:.2f} | '
                         f'{_fmt(row.get("fwd_per_flop"))} | '
                         f'{_fmt(row.get("train_per_flop"))} |')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _csv_choices(name: str, allowed: tuple) -> Callable[[str], List[str]]:

    def parse(value: str) -> List[str]:
        items = [v.strip() for v in value.split(',') if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f'{name} must be a comma-separated list of {list(allowed)}, '
                f'got {value!r}')
        return items

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--model', default='plain', help=f'group to compare: {list(GROUPS)}')
    parser.add_argument(
        '--peers',
        default=None,
        help='comma-separated peers of the group to measure besides ours '
        '(default: all; see GROUPS)')
    parser.add_argument(
        '--modes',
        type=_csv_choices('--modes', MODES),
        default=list(MODES),
        help='eager and/or compiled (torch.compile)')
    parser.add_argument(
        '--phases',
        type=_csv_choices('--phases', PHASES),
        default=list(PHASES),
        help='fwd (no autograd) and/or train (forward, backward, SGD step)')
    parser.add_argument(
        '--arch',
        default='base',
        help='arch name of the group, or "custom" with --embed-dims/--depth/'
        '--num-heads (plain, dit)')
    parser.add_argument('--embed-dims', type=int, default=64)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--num-heads', type=int, default=2)
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument(
        '--dit-patch-size', type=int, default=4, help='patch of the dit group')
    parser.add_argument(
        '--ffn-hidden-rule',
        default='llama',
        choices=['llama', 'mmpretrain'],
        help='SwiGLU width of the plain model (llama: parameter-matched)')
    parser.add_argument(
        '--img-size',
        type=int,
        default=224,
        help='image side (dit: latents of img-size / 8)')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument(
        '--warmup',
        type=int,
        default=3,
        help='untimed calls first (at least 1: compiles)')
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='fresh worker sets, interleaved in alternating order')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='autocast')
    parser.add_argument(
        '--amp-dtype',
        default='bfloat16',
        choices=AMP_DTYPES,
        help='autocast dtype')
    parser.add_argument(
        '--sdpa-backends',
        type=_csv_choices('--sdpa-backends', SDPA_BACKENDS),
        default=['flash', 'efficient'],
        help='SDPA kernels allowed on CUDA')
    parser.add_argument(
        '--compile-backend',
        default='inductor',
        help='torch.compile backend (aot_eager: no code generation)')
    parser.add_argument(
        '--compile-mode',
        default=None,
        help='torch.compile mode (e.g. max-autotune)')
    parser.add_argument(
        '--peak-tflops',
        type=float,
        default=None,
        help='device peak TFLOP/s for MFU (default: PEAK_TFLOPS by CUDA '
        'device name; none on CPU)')
    parser.add_argument(
        '--profile',
        type=int,
        default=0,
        help='profile one training step per worker and print the shares of '
        'matmul / attention / conv / other and this many top ops')
    parser.add_argument(
        '--official-root',
        default=None,
        help='checkout of github.com/Meituan-AutoML/VisionLLaMA to import '
        'the official models from')
    parser.add_argument(
        '--official-site',
        default=None,
        help='extra import folder searched first by the official workers '
        'only, for the packages of their era (e.g. `pip install --target '
        'DIR "timm<1"` for dit/models.py)')
    parser.add_argument(
        '--baseline-root',
        default=None,
        help='another checkout of this package: adds the peer `baseline`, '
        'our model built from that code')
    parser.add_argument(
        '--threads', type=int, default=0, help='torch CPU threads (0: keep)')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        '--worker-mode', default='eager', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model not in GROUPS:
        parser.error(f'--model must be one of {list(GROUPS)}, got '
                     f'{args.model!r}')
    peers = [k for k in GROUPS[args.model] if k != 'ours']
    if args.peers is None:
        args.peers = peers
    else:
        args.peers = [p.strip() for p in args.peers.split(',') if p.strip()]
        bad = [p for p in args.peers if p not in peers]
        if bad:
            parser.error(f'--peers of --model {args.model} must be among '
                         f'{peers}, got {bad}')
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error(f'--peak-tflops must be > 0, got {args.peak_tflops}')
    if args.baseline_root is not None:
        if not osp.isfile(
                osp.join(args.baseline_root, 'visionllama_mm', '__init__.py')):
            parser.error('--baseline-root must be a checkout of this package '
                         f'(with visionllama_mm/), got {args.baseline_root!r}')
        args.peers = ['baseline'] + [p for p in args.peers if p != 'baseline']
    for name in ('official_root', 'official_site', 'baseline_root'):
        path = getattr(args, name)
        if path is not None and not osp.isdir(path):
            parser.error(f'--{name.replace("_", "-")} must be a directory, '
                         f'got {path!r}')
        if path is not None:
            setattr(args, name, osp.abspath(path))
    return args


def jobs_of(args) -> List[Tuple[str, str]]:
    """(peer key, mode) of every worker, ours first."""
    return [(key, mode) for key in ['ours'] + list(args.peers)
            for mode in args.modes]


def main(argv=None) -> List[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker is not None:
        print(
            RESULT_TAG +
            json.dumps(measure(args, args.worker, args.worker_mode)),
            flush=True)
        return []
    results = run_rounds(argv, jobs_of(args), args.rounds, args.batch_size)
    print(format_table(results, args), flush=True)
    return results


if __name__ == '__main__':
    main()

"""Memory per rank and step time of DDP against FSDP.

For one model and a number of ranks, the script starts that many processes
(``nccl`` on CUDA, ``gloo`` on CPU), wraps the same model once in
``DistributedDataParallel`` and once in ``FullyShardedDataParallel`` (one
FSDP unit per block, :func:`visionllama_mm.engine.fsdp.
llama_block_wrap_policy`, as ``configs/_base_/strategies/fsdp.py`` does),
runs training steps (forward, backward, AdamW) on random inputs and reports
per rank:

* the persistent training state held by the rank: parameters, gradients
  and AdamW states (bytes of the tensors themselves, exact on any device);
  DDP keeps all of it on every rank, FSDP 1/N of it;
* on CUDA, the peak allocated memory of a step
  (``torch.cuda.max_memory_allocated``: state plus activations plus the
  gathered blocks);
* the median step time.

Models (``--model``): ``plain`` (:class:`~visionllama_mm.backbones.
VisionLLaMA`, ``--arch`` of its arch zoo), ``dit`` (``DiTLLaMA``, ``--arch``
a name of ``DiTLLaMA_models``), or ``tiny-plain`` / ``tiny-dit`` (test
sizes).

``--estimate`` measures nothing: it builds the model on the meta device (no
memory, no weights) and computes the same per-rank state from the FSDP
units the wrap policy forms (:func:`fsdp_state_estimate`), for any rank
count, plus the largest unit that FSDP gathers at once. ``--model
adapter-7b`` (LLaMA-Adapter V2 on LLaMA-7B with CLIP ViT-L/14, stored in
float32 as in ``configs/llama_adapter_v2/*fsdp*``) is available in this
mode only.

Examples::

    python tools/analysis_tools/benchmark_fsdp.py --model plain --arch base \\
        --nproc 8 --batch-size 32 --steps 20
    python tools/analysis_tools/benchmark_fsdp.py --model adapter-7b \\
        --phase finetune --nproc 8 --estimate
"""
import argparse
import json
import math
import os
import socket
import statistics
import time
from typing import Callable, Dict, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

MODES = ('ddp', 'fsdp')
RESULT_TAG = '[benchmark-fsdp] '
MODELS = ('plain', 'dit', 'tiny-plain', 'tiny-dit', 'adapter-7b')


def build(args) -> Tuple[torch.nn.Module, Callable, Callable]:
    """The model, a batch maker ``(generator) -> tuple`` and a function
    ``(model, batch) -> loss``."""
    if args.model == 'adapter-7b':
        from visionllama_mm.multimodal import LLaMAAdapterV2
        from visionllama_mm.multimodal.llama_adapter_v2.llm import \
            LLAMA_7B_PARAMS
        from visionllama_mm.multimodal.llama_adapter_v2.visual import \
            CLIP_VIT_L14_CONFIG
        model = LLaMAAdapterV2(
            llm=dict(params=dict(LLAMA_7B_PARAMS, vocab_size=32000)),
            vision_encoder=dict(type='hf', config=CLIP_VIT_L14_CONFIG),
            phase=args.phase)
        return model, None, None
    if args.model in ('plain', 'tiny-plain'):
        from visionllama_mm.backbones import VisionLLaMA
        arch = args.arch if args.model == 'plain' else dict(
            embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128)
        model = VisionLLaMA(
            arch=arch, img_size=args.img_size, patch_size=args.patch_size)

        def make_batch(g):
            return (torch.randn(
                args.batch_size, 3, args.img_size, args.img_size,
                generator=g), )

        def loss_fn(m, batch):
            return m(*batch)[-1].float().pow(2).mean()
    else:
        from visionllama_mm.generation.models import DiTLLaMA, DiTLLaMA_models
        if args.model == 'dit':
            model = DiTLLaMA_models[args.arch](input_size=args.img_size)
        else:
            model = DiTLLaMA(
                input_size=args.img_size,
                patch_size=2,
                hidden_size=64,
                depth=4,
                num_heads=4,
                num_classes=10)
        classes = model.y_embedder.num_classes

        def make_batch(g):
            return (torch.randn(
                args.batch_size,
                model.in_channels,
                args.img_size,
                args.img_size,
                generator=g),
                    torch.randint(0, 1000, (args.batch_size, ), generator=g),
                    torch.randint(
                        0, classes, (args.batch_size, ), generator=g))

        def loss_fn(m, batch):
            return m(*batch).float().pow(2).mean()

    return model, make_batch, loss_fn


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors
               if isinstance(t, torch.Tensor))


def _worker(rank: int, world: int, port: int, mode: str, args, queue) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    cuda = torch.cuda.is_available() and args.device == 'cuda'
    dist.init_process_group(
        'nccl' if cuda else 'gloo', rank=rank, world_size=world)
    device = torch.device('cuda', rank) if cuda else torch.device('cpu')
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    model, make_batch, loss_fn = build(args)
    if mode == 'ddp':
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model.to(device), device_ids=[rank] if cuda else None)
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        from visionllama_mm.engine.fsdp import llama_block_wrap_policy
        model = FSDP(
            model,
            device_id=device,
            auto_wrap_policy=llama_block_wrap_policy,
            use_orig_params=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    times = []
    for step in range(args.warmup + args.steps):
        batch = [t.to(device) for t in make_batch(g)]
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    params = list(model.parameters())
    state = [
        v for s in optimizer.state.values() for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    ]
    row = dict(
        params=_bytes(params),
        grads=_bytes(p.grad for p in params if p.grad is not None),
        optimizer=_bytes(state),
        peak=torch.cuda.max_memory_allocated(device) if cuda else None,
        step=statistics.median(times))
    rows = [None] * world
    dist.all_gather_object(rows, row)
    if rank == 0:
        queue.put(rows)
    dist.destroy_process_group()


def fsdp_units(model: torch.nn.Module, policy: Callable) -> list:
    """The parameters of each FSDP unit that ``policy`` forms, as FSDP's
    auto-wrap does (post-order: a wrapped module takes the parameters not
    already taken by a unit inside it; the root takes the rest).

    Returns:
        list[list[nn.Parameter]]: One list per unit, the root last.
    """
    taken = set()
    units = []

    def visit(module, is_root):
        for child in module.children():
            visit(child, False)
        if is_root or policy(module, False, 0):
            params = [p for p in module.parameters() if id(p) not in taken]
            taken.update(id(p) for p in params)
            if params:
                units.append(params)

    visit(model, True)
    return units


def fsdp_state_estimate(model: torch.nn.Module, world: int,
                        policy: Callable) -> dict:
    """Per-rank training state of ``model`` under FSDP (FULL_SHARD,
    ``use_orig_params=True``) and AdamW, from the parameter shapes only.

    Each unit is one flat parameter, padded to a multiple of ``world`` and
    split evenly: a rank holds ``ceil(numel / world)`` elements of it, a
    gradient shard of the same size when any parameter of the unit is
    trainable (FSDP reduces the whole flat gradient), and AdamW's two
    states for its share of the trainable elements. Works on the meta
    device.

    Args:
        model (nn.Module): The unwrapped model.
        world (int): Number of ranks.
        policy (Callable): The auto-wrap policy.

    Returns:
        dict: Bytes per rank of ``params``, ``grads``, ``optimizer``,
        ``state`` (their sum) and ``largest_unit`` (the unsharded size of
        the largest unit, gathered during its forward and backward); and the
        element counts ``total`` and ``trainable``.
    """
    out = dict(
        params=0, grads=0, optimizer=0, largest_unit=0, total=0, trainable=0)
    for params in fsdp_units(model, policy):
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(
                f'an FSDP unit mixes dtypes {sorted(map(str, dtypes))}; '
                'FSDP flattens each unit into one tensor of one dtype')
        size = params[0].element_size()
        numel = sum(p.numel() for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        shard = math.ceil(numel / world)
        out['params'] += shard * size
        if trainable:
            out['grads'] += shard * size
        out['optimizer'] += 2 * math.ceil(trainable / world) * size
        out['largest_unit'] = max(out['largest_unit'], numel * size)
        out['total'] += numel
        out['trainable'] += trainable
    out['state'] = out['params'] + out['grads'] + out['optimizer']
    return out


def estimate(args) -> Dict[str, dict]:
    """:func:`fsdp_state_estimate` of ``args.model`` on the meta device,
    next to the DDP state (everything on every rank)."""
    from visionllama_mm.engine.fsdp import llama_block_wrap_policy
    with torch.device('meta'):
        model = build(args)[0]
    fsdp = fsdp_state_estimate(model, args.nproc, llama_block_wrap_policy)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    ddp = dict(
        params=_bytes(params),
        grads=_bytes(trainable),
        optimizer=2 * _bytes(trainable))
    ddp['state'] = ddp['params'] + ddp['grads'] + ddp['optimizer']
    return dict(ddp=ddp, fsdp=fsdp)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run(args) -> Dict[str, dict]:
    """Measure every mode; returns ``{mode: per-rank maxima}``."""
    ctx = mp.get_context('spawn')
    results = {}
    for mode in args.modes:
        queue = ctx.SimpleQueue()
        mp.start_processes(
            _worker,
            args=(args.nproc, _free_port(), mode, args, queue),
            nprocs=args.nproc,
            join=True,
            start_method='spawn')
        rows = queue.get()
        merged = {
            k: max(r[k] for r in rows)
            for k in ('params', 'grads', 'optimizer')
        }
        merged['state'] = merged['params'] + merged['grads'] + \
            merged['optimizer']
        merged['peak'] = None if rows[0]['peak'] is None else max(
            r['peak'] for r in rows)
        merged['step'] = max(r['step'] for r in rows)
        results[mode] = merged
    return results


def format_table(results: Dict[str, dict], args) -> str:
    """Markdown table of :func:`run`'s (or :func:`estimate`'s) results
    (MiB, ms)."""
    mib = 2.0**20
    if args.estimate:
        lines = [
            f'{args.model} | {args.nproc} ranks | estimate (meta device)', '',
            '| strategy | params / rank (MiB) | grads / rank (MiB) | AdamW / '
            'rank (MiB) | state / rank (MiB) | largest gathered unit (MiB) |',
            '|---|---|---|---|---|---|'
        ]
        for mode, r in results.items():
            unit = r.get('largest_unit')
            unit = '-' if unit is None else f'{unit / mib:.1f}'
            lines.append(f'| {mode.upper()} | {r["params"] / mib:.1f} | '
                         f'{r["grads"] / mib:.1f} | '
                         f'{r["optimizer"] / mib:.1f} | '
                         f'{r["state"] / mib:.1f} | {unit} |')
        return '\n'.join(lines)
    lines = [
        f'{args.model} {args.arch if args.model in ("plain", "dit") else ""}'
        f' | {args.nproc} ranks | batch {args.batch_size} per rank | '
        f'{args.device}', '',
        '| strategy | params / rank (MiB) | grads / rank (MiB) | AdamW / rank'
        ' (MiB) | state / rank (MiB) | peak / rank (MiB) | step (ms) |',
        '|---|---|---|---|---|---|---|'
    ]
    for mode, r in results.items():
        peak = '-' if r['peak'] is None else f'{r["peak"] / mib:.1f}'
        lines.append(f'| {mode.upper()} | {r["params"] / mib:.2f} | '
                     f'{r["grads"] / mib:.2f} | {r["optimizer"] / mib:.2f} | '
                     f'{r["state"] / mib:.2f} | {peak} | '
                     f'{1000 * r["step"]:.1f} |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=MODELS, default='tiny-plain')
    parser.add_argument(
        '--arch',
        default='base',
        help='plain: an arch of VisionLLaMA.arch_zoo; dit: a name of '
        'DiTLLaMA_models (e.g. DiTLLaMA_XL_2)')
    parser.add_argument('--nproc', type=int, default=2, help='ranks')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=32)
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--device',
        choices=('cpu', 'cuda'),
        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument(
        '--estimate',
        action='store_true',
        help='compute the per-rank state on the meta device instead of '
        'measuring it')
    parser.add_argument(
        '--phase',
        default='finetune',
        help='adapter-7b: the trainable group (pretrain, finetune, joint)')
    args = parser.parse_args(argv)
    if args.model == 'adapter-7b' and not args.estimate:
        raise ValueError('--model adapter-7b needs --estimate (7B weights '
                         'are not measured here)')
    if args.nproc < 1:
        raise ValueError(f'--nproc must be >= 1, got {args.nproc}')
    if args.device == 'cuda' and not args.estimate and \
            args.nproc > torch.cuda.device_count():
        raise ValueError(f'--nproc {args.nproc} exceeds the '
                         f'{torch.cuda.device_count()} visible GPUs')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results = estimate(args) if args.estimate else run(args)
    print(format_table(results, args))
    print(RESULT_TAG + json.dumps(results))
    return results


if __name__ == '__main__':
    main()

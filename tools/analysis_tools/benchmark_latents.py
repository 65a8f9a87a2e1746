"""Training step time with cached latents vs. encoding on the fly (CPU ok).

Builds the SD-VAE architecture (``diffusers.AutoencoderKL`` with the
sd-vae-ft-ema layout, randomly initialised: the speed does not depend on
the weights) and a SiT-LLaMA / DiT-LLaMA model, and times full training
steps (loss, backward, AdamW) on the same batch two ways, interleaved:

* on the fly: images -> VAE encoder -> posterior sample -> model;
* cached: stored posterior moments -> posterior sample -> model
  (``cached_latents=True``, what ``extract_latents.py`` enables).

Prints the median step times and their ratio. Example (the README's
number)::

    python tools/analysis_tools/benchmark_latents.py --arch SiTLLaMA_B_2 \
        --image-size 64 --batch-size 4 --iters 3 --rounds 2
"""
import argparse
import statistics
import tempfile
import time

import torch

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=('DownEncoderBlock2D', ) * 4,
    up_block_types=('UpDecoderBlock2D', ) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='SiTLLaMA_B_2')
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.registry import MODELS

    folder = tempfile.mkdtemp(prefix='sd_vae_arch_')
    torch.manual_seed(0)
    AutoencoderKL(**SD_VAE).save_pretrained(folder)
    kind = 'SiTLLaMA' if args.arch.startswith('SiT') else 'DiTLLaMA'
    common = dict(
        type=f'visionllama_mm.{kind}',
        arch=args.arch,
        net_cfg=dict(input_size=args.image_size // 8, num_classes=1000),
        vae=dict(path=folder))
    on_the_fly = MODELS.build(dict(common))
    cached = MODELS.build(dict(common, cached_latents=True))
    cached.load_state_dict(on_the_fly.state_dict())
    n, s = args.batch_size, args.image_size
    images = torch.rand(n, 3, s, s) * 2 - 1
    moments = on_the_fly.vae.moments(images)
    samples = [dict(gt_label=i % 1000) for i in range(n)]

    def stepper(model, inputs):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            loss = model(inputs, samples, mode='loss')['loss']
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    runs = dict(
        on_the_fly=stepper(on_the_fly, images),
        cached=stepper(cached, moments))
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, step in runs.items():
            for _ in range(args.warmup):
                step()
            for _ in range(args.iters):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med['cached'] / med['on_the_fly']
    print(f'{args.arch}, {s}x{s} images ({s // 8}x{s // 8} latents), batch '
          f'{n}, {torch.get_num_threads()} thread(s): on the fly '
          f'{med["on_the_fly"]:.3f} s/step, cached {med["cached"]:.3f} '
          f's/step, ratio {ratio:.2f}')
    return med, ratio


if __name__ == '__main__':
    main()

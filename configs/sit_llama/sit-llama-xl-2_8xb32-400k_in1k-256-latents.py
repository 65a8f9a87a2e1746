# SiT-LLaMA-XL/2 trained from SD-VAE latents extracted once (fast-DiT's
# speed-up): the same recipe as sit-llama-xl-2_8xb32-400k_in1k-256.py, but
# the data are the posterior moments written by
#   python tools/dataset_converters/extract_latents.py \
#       configs/sit_llama/sit-llama-xl-2_8xb32-400k_in1k-256.py \
#       --out-dir data/imagenet256_sd-vae-ft-ema_latents
# A fresh latent sample (and flip) is still drawn every time, so training
# is the same as encoding on the fly; the VAE is loaded only to decode
# samples.
_base_ = ['./sit-llama-xl-2_8xb32-400k_in1k-256.py']

latents_root = 'data/imagenet256_sd-vae-ft-ema_latents'

model = dict(
    cached_latents=True,
    # the moments must not be normalised: stack only
    data_preprocessor=dict(_delete_=True, type='ImgDataPreprocessor'))

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='visionllama_mm.CachedLatents',
        data_root=latents_root))

"""VisionLLaMA encoder for MAE pretraining (``MAELLaMA``).

Masked Autoencoders Are Scalable Vision Learners
(https://arxiv.org/abs/2111.06377) with the plain VisionLLaMA of
arXiv 2403.00522 as encoder (docs/visionllama.md#mae-encoder). The encoder
plugs into mmpretrain's ``MAE`` algorithm together with the standard
``MAEPretrainDecoder`` and ``MAEPretrainHead`` (``norm_pix``): with masking
on, ``forward`` returns ``(latent, mask, ids_restore)`` as ``MAE.loss``
expects.

Per batch (official numerics):

1. patch-embed, no position embedding;
2. per-sample random masking: noise ``u ~ U(0, 1)^(B x N)``,
   ``ids_shuffle = argsort(u)``, ``ids_restore = argsort(ids_shuffle)``,
   the first ``K = int(N (1 - mask_ratio))`` of ``ids_shuffle`` are kept;
   ``mask`` is 1 for removed and 0 for kept patches, in grid order;
3. every kept token is rotated at its own grid position: the RoPE tables are
   gathered per sample with ``ids_keep`` (x = p mod W, y = p div W);
4. the blocks run on the K kept tokens only; the class token does *not*
   pass through the encoder;
5. the raw ``cls_token`` is prepended and ``ln1`` applied, so the class
   output is ``ln1(cls_token)`` for every sample (the decoder expects the
   class slot).

The official no-mask forward crashes (N + 1 tokens against an N-entry RoPE
table, docs/visionllama.md#official-quirks item 11). Here ``forward(x,
mask=None)`` (or ``False``) mirrors pretraining without masking: all patches go
through the blocks with grid RoPE, the raw class token is prepended and ``ln1``
applied, and the result is formatted by ``out_type`` / ``out_indices`` like the
plain backbone, so a pretrained encoder gives features directly
(``MAE.extract_feat``).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from visionllama_mm.backbones.vision_llama import VisionLLaMA
from visionllama_mm.layers import gather_tables
from visionllama_mm.registry import MODELS

__all__ = ['MAELLaMA']


@MODELS.register_module()
class MAELLaMA(VisionLLaMA):
    """Plain VisionLLaMA encoder with MAE random masking.

    A :class:`~visionllama_mm.backbones.VisionLLaMA` with a class token
    (never rotated, never through the blocks) and ``out_type='raw'`` by
    default. Parameter names are those of the official MAE checkpoints
    (``backbone.cls_token``, ``backbone.patch_embed.projection.*``,
    ``backbone.layers.i.*``, ``backbone.ln1.*``); their unused ``pos_embed``
    is dropped on load.

    Args:
        arch (str | dict): Architecture name or dict, see
            :class:`~visionllama_mm.backbones.VisionLLaMA`. Defaults to
            ``'b'``.
        out_type (str): Output format of the no-mask forward: ``'raw'``
            (B, 1 + N, C), ``'featmap'``, ``'avg_featmap'`` or
            ``'cls_token'``. The masked forward always returns raw tokens.
            Defaults to ``'raw'``.
        mask_ratio (float): Fraction of patches removed per sample, in
            [0, 1). Defaults to 0.75.
        **kwargs: Further :class:`~visionllama_mm.backbones.VisionLLaMA`
            arguments (``img_size``, ``patch_size``, ``drop_path_rate``,
            ``norm_cfg``, ``final_norm`` (``ln1`` after the last block and
            on the class token; official True), ``ffn_hidden_rule``
            (official ``'mmpretrain'``), ``with_cp``, ``init_cfg``, ...).
            The MAE recipe sets Xavier-uniform Linear / LN 1-0 on the whole
            ``MAE`` model through its ``init_cfg``. ``with_cls_token`` is
            always True.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 out_type: str = 'raw',
                 mask_ratio: float = 0.75,
                 **kwargs) -> None:
        if not (isinstance(mask_ratio,
                           (int, float)) and 0. <= mask_ratio < 1.):
            raise ValueError('mask_ratio must be a number in [0, 1), got '
                             f'{mask_ratio!r}')
        if not kwargs.pop('with_cls_token', True):
            raise ValueError('MAELLaMA needs with_cls_token=True (the class '
                             'slot of the MAE decoder)')
        super().__init__(
            arch=arch, out_type=out_type, with_cls_token=True, **kwargs)
        # the class token skips the blocks: they rotate every token
        self.num_prefix_tokens = 0
        self.mask_ratio = float(mask_ratio)
        self.num_patches = (
            self.patch_resolution[0] * self.patch_resolution[1])

    def init_weights(self) -> None:
        """Official MAE encoder init
        (docs/visionllama.md#plain-initialisation).

        After the plain init (FFN Xavier-uniform with N(0, 1e-6) biases),
        the patch-embedding weight gets Xavier-uniform on its
        (C, in_channels * p * p) view and ``cls_token`` N(0, 0.02). The
        Xavier / LayerNorm init of the other layers comes from the ``MAE``
        model's ``init_cfg``. An ``init_cfg`` of the encoder replaces all
        of it.
        """
        super().init_weights()
        if not self.uses_official_init:
            return
        w = self.patch_embed.projection.weight
        with torch.no_grad():
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(self.cls_token, std=.02)

    # ------------------------------------------------------------------
    # masking
    # ------------------------------------------------------------------
    def num_kept(self,
                 num_patches: int,
                 mask_ratio: Optional[float] = None) -> int:
        """K = int(N (1 - mask_ratio)), the kept patches per sample."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        keep = int(num_patches * (1 - ratio))
        if keep < 1:
            raise ValueError(f'mask_ratio={ratio} keeps no patch of '
                             f'{num_patches}')
        return keep

    def random_masking(self,
                       x: Tensor,
                       mask_ratio: Optional[float] = None,
                       noise: Optional[Tensor] = None
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-sample random masking by argsort of uniform noise
        (docs/visionllama.md#mae-encoder).

        Args:
            x (Tensor): Patch tokens (B, N, C) in grid order.
            mask_ratio (float, optional): Fraction removed; defaults to
                :attr:`mask_ratio`.
            noise (Tensor, optional): (B, N) noise; smaller values are kept.
                Defaults to ``torch.rand``.

        Returns:
            tuple[Tensor, Tensor, Tensor, Tensor]:

            - kept tokens (B, K, C), in the order of ``ids_keep``;
            - ``mask`` (B, N), 1 for removed and 0 for kept patches;
            - ``ids_restore`` (B, N), the inverse of the shuffle;
            - ``ids_keep`` (B, K), grid indices of the kept tokens.
        """
        B, N, C = x.shape
        keep = self.num_kept(N, mask_ratio)
        if noise is None:
            noise = torch.rand(B, N, device=x.device)
        elif noise.shape != (B, N):
            raise ValueError(f'noise must have shape {(B, N)}, got '
                             f'{tuple(noise.shape)}')
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: keep small
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, C))
        # 0 for the first K of the shuffled order, 1 after; back to grid order
        shuffled = (torch.arange(N, device=x.device) >= keep).to(x.dtype)
        mask = torch.gather(shuffled.expand(B, N), 1, ids_restore)
        return x_kept, mask, ids_restore, ids_keep

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def _head_tokens(self, x: Tensor, normed: bool) -> Tensor:
        """Prepend the raw class token (and apply ``ln1`` to it)."""
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        if normed:
            cls_token = self.ln1(cls_token)
        return torch.cat([cls_token, x], dim=1)

    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patch tokens only: the class token does not pass the blocks."""
        return self.patch_embed(x)

    def _output(self, index: int, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """The class token prepended (raw, as in pretraining; ``ln1``
        applied with the last block's final norm), then ``out_type``."""
        last = index == self.num_layers - 1
        tokens = self._head_tokens(x, normed=last and self.final_norm)
        return self._format_output(tokens, hw)

    def _encode(self, x: Tensor, hw: Tuple[int, int],
                rope: Optional[Tuple[Tensor, Tensor]]) -> Tensor:
        """``ln1(cat(cls_token, blocks(x)))`` for patch tokens ``x``."""
        x, _ = self._forward_layers(x, hw, rope, collect=False)
        return self._head_tokens(x, normed=self.final_norm)

    def forward_kept(self, x: Tensor, ids_keep: Tensor,
                     hw: Tuple[int, int]) -> Tensor:
        """Encode kept tokens rotated at their own grid positions.

        Args:
            x (Tensor): Kept patch tokens (B, K, C).
            ids_keep (Tensor): (B, K) grid index of every kept token.
            hw (tuple[int, int]): Token grid (H, W) of the full image.

        Returns:
            Tensor: ``ln1(cat(cls_token, blocks(x)))``, (B, 1 + K, C).
        """
        cos, sin = self._rope_tables(hw[0], hw[1], x.device)
        rope = gather_tables(cos, sin, ids_keep)  # (B, K, head_dim)
        return self._encode(x, hw, rope)

    def forward_features(self, x: Tensor) -> Tensor:
        """Unmasked tokens (B, 1 + N, C): class token, then patch tokens."""
        x, hw = self._embed(x)
        return self._encode(x, hw, None)

    def forward(
        self,
        x: Tensor,
        mask: Optional[bool] = True
    ) -> Union[Tuple[Tensor, Tensor, Tensor], Tuple[Tensor, ...]]:
        """Masked encoding for MAE, or plain features without a mask.

        Args:
            x (Tensor): Images (B, C, H, W).
            mask (bool, optional): ``True`` - random masking, returns
                ``(latent, mask, ids_restore)`` with latent (B, 1 + K, C),
                mask (B, N) and ids_restore (B, N). ``None`` or ``False`` -
                no masking, returns the tuple of ``out_type`` outputs of the
                ``out_indices`` blocks. Defaults to True.

        Returns:
            tuple: See ``mask``.
        """
        if mask is None or mask is False:
            return super().forward(x)
        if mask is not True:
            raise ValueError('mask must be True (random masking), False or '
                             f'None (no masking), got {type(mask).__name__}')
        tokens, hw = self.patch_embed(x)
        kept, mask, ids_restore, ids_keep = self.random_masking(tokens)
        latent = self.forward_kept(kept, ids_keep, hw)
        return latent, mask, ids_restore

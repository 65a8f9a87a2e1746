"""Small helpers shared by every part of the package.

The input checks look at Python-level facts only (types, ranks, dtypes and
sizes of the tensor's shape), never at tensor values: they add no graph
break under ``torch.compile`` and export as shape guards. Values such as
NaN simply propagate.
"""
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from torch import Tensor

__all__ = [
    'check_choice', 'check_positive_int', 'parse_out_indices',
    'check_image_input'
]


def check_choice(name: str, value: Any, allowed: Iterable) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is in ``allowed``.

    Args:
        name (str): The argument's name, as the user wrote it.
        value: The value given.
        allowed (Iterable): The allowed values (a dict: its keys).
    """
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (bools are not ints
    here).

    Raises:
        TypeError: ``value`` is not an int.
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int >= {minimum}, got '
                        f'{value!r} ({type(value).__name__})')
    if value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value}')
    return value


def parse_out_indices(out_indices: Union[int, Sequence[int]],
                      num_layers: int,
                      unit: str = 'layers') -> List[int]:
    """Normalise ``out_indices`` (negative from the end) and validate it.

    Args:
        out_indices (int | Sequence[int]): One index or a non-empty
            sequence of indices in ``[-num_layers, num_layers - 1]``.
        num_layers (int): How many outputs there are to choose from.
        unit (str): What is indexed, for the error message (e.g.
            ``'stages'``). Defaults to ``'layers'``.

    Returns:
        list[int]: The indices, made non-negative, in the given order.

    Raises:
        TypeError: ``out_indices`` is not an int or a sequence of ints
            (bools and strings are refused).
        ValueError: It is empty or an entry is out of range.
    """
    allowed = f'an int or a non-empty sequence of ints in ' \
              f'[{-num_layers}, {num_layers - 1}] ({num_layers} {unit})'
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = [out_indices]
    if isinstance(out_indices,
                  (str, bytes, bool)) or not isinstance(out_indices, Sequence):
        raise TypeError(f'out_indices must be {allowed}, got '
                        f'{out_indices!r} ({type(out_indices).__name__})')
    if len(out_indices) == 0:
        raise ValueError(f'out_indices must be {allowed}, got an empty '
                         f'{type(out_indices).__name__}')
    parsed = []
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f'out_indices must be {allowed}, got the entry '
                            f'{index!r} ({type(index).__name__})')
        i = index + num_layers if index < 0 else index
        if not 0 <= i < num_layers:
            raise ValueError(f'out_indices entry {index} is out of range: '
                             f'out_indices must be {allowed}')
        parsed.append(i)
    return parsed


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def check_image_input(x: Any,
                      in_channels: int,
                      divisor: Union[int, Sequence[int]] = 1,
                      min_size: Optional[Union[int, Sequence[int]]] = None,
                      name: str = 'inputs',
                      why: str = '') -> None:
    """Validate a batch of images (B, C, H, W) before a backbone sees it.

    Only the type, rank, dtype and shape are checked (no value is read), so
    the check compiles and exports without a graph break.

    Args:
        x: The input.
        in_channels (int): The channel count the model was built with.
        divisor (int | tuple[int, int]): H and W must be multiples of it
            (the patch size). Defaults to 1.
        min_size (int | tuple[int, int], optional): The smallest allowed
            (H, W). Defaults to None (1).
        name (str): The argument's name in messages. Defaults to
            ``'inputs'``.
        why (str): Reason for ``min_size``, appended to its message.

    Raises:
        TypeError: ``x`` is not a tensor or not floating point.
        ValueError: Wrong rank, empty batch, wrong channel count, too small
            or not divisible.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of shape (B, C, H, '
                        f'W), got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError(f'{name} must have shape (B, C, H, W) (4 dims), got '
                         f'a {x.dim()}-dim tensor of shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor (float32, '
                        f'float16, bfloat16, float64), got dtype {x.dtype}; '
                        'convert it with .float() (and normalise it) first')
    b, c, h, w = x.shape
    if b == 0:
        raise ValueError(f'{name} has batch size 0 (shape {tuple(x.shape)});'
                         ' at least one image is needed')
    if c != in_channels:
        raise ValueError(f'{name} has {c} channels (shape {tuple(x.shape)}) '
                         f'but the model was built with in_channels='
                         f'{in_channels}')
    if min_size is not None:
        min_h, min_w = _pair(min_size)
        if h < min_h or w < min_w:
            raise ValueError(f'{name} size {h}x{w} (HxW) is too small: the '
                             f'smallest allowed is {min_h}x{min_w}'
                             f'{" (" + why + ")" if why else ""}')
    div_h, div_w = _pair(divisor)
    if h % div_h or w % div_w:
        patch = div_h if div_h == div_w else (div_h, div_w)
        raise ValueError(f'{name} size {h}x{w} (HxW) must be divisible by '
                         f'patch_size={patch}; resize or pad it (e.g. to '
                         f'{h + (-h) % div_h}x{w + (-w) % div_w})')

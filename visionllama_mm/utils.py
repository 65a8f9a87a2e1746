"""Small helpers shared by every part of the package."""
from typing import Any, Iterable

__all__ = ['check_choice']


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

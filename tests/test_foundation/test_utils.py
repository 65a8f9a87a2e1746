import pytest

from visionllama_mm.utils import check_choice


def test_check_choice_accepts_allowed_values():
    check_choice('mode', 'sde', ('sde', 'ode'))
    check_choice('dtype', 'fp16', {'fp16': 1, 'fp32': 2})


@pytest.mark.parametrize('allowed', [('sde', 'ode'), {'sde': 0, 'ode': 1}])
def test_check_choice_names_argument_and_allowed_values(allowed):
    with pytest.raises(ValueError) as err:
        check_choice('mode', 'euler', allowed)
    assert str(err.value) == "mode must be one of ['sde', 'ode'], got 'euler'"

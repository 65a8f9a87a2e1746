"""SkipNonFinite*OptimWrapper: the deit engine's non-finite-loss skip."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper

import visionllama_mm.engine.optimizers.skip_non_finite_optim_wrapper as mod
from visionllama_mm.engine import (SkipNonFiniteAmpOptimWrapper,
                                   SkipNonFiniteOptimWrapper)


def build(accumulative_counts=1, type_='SkipNonFiniteOptimWrapper'):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    wrapper = build_optim_wrapper(
        model,
        dict(
            type=f'visionllama_mm.{type_}',
            optimizer=dict(type='SGD', lr=0.1),
            accumulative_counts=accumulative_counts))
    return model, wrapper


def loss_of(model, bad=False):
    loss = model(torch.ones(2, 3)).pow(2).mean()
    return loss * float('nan') if bad else loss


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_skips_a_non_finite_iteration_and_goes_on():
    model, wrapper = build()
    assert isinstance(wrapper, SkipNonFiniteOptimWrapper)
    before = params(model)
    wrapper.update_params(loss_of(model, bad=True))
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)  # no step
        assert p.grad is None or not p.grad.any()  # no gradient kept
    assert wrapper.skipped_iters == 1
    # a finite loss afterwards is an ordinary SGD step
    loss = loss_of(model)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    wrapper.update_params(loss_of(model))
    for p, q, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), q - 0.1 * g)
    assert wrapper.skipped_iters == 1


def test_inf_is_skipped_too():
    model, wrapper = build()
    before = params(model)
    wrapper.update_params(loss_of(model) + float('inf'))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_accumulation_window_is_discarded():
    """accumulative_counts=2: a bad second half drops the window's step."""
    model, wrapper = build(accumulative_counts=2)
    before = params(model)
    wrapper.update_params(loss_of(model))
    wrapper.update_params(loss_of(model, bad=True))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    # the next full window steps with its own two halves only
    half = loss_of(model) / 2
    grads = torch.autograd.grad(half, list(model.parameters()))
    wrapper.update_params(loss_of(model))
    wrapper.update_params(loss_of(model))
    for p, q, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), q - 0.1 * 2 * g)


def test_any_rank_non_finite_skips_every_rank(monkeypatch):
    """The flag is all-reduced: another rank's NaN skips a finite loss."""
    model, wrapper = build()

    def other_rank_bad(tensor, op='sum'):
        tensor.add_(1.)  # the other rank's non-finite flag

    monkeypatch.setattr(mod, 'all_reduce', other_rank_bad)
    before = params(model)
    wrapper.update_params(loss_of(model))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert wrapper.skipped_iters == 1


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='AmpOptimWrapper needs a GPU')
def test_amp_variant_leaves_the_loss_scale():
    model = torch.nn.Linear(3, 1).cuda()
    wrapper = build_optim_wrapper(
        model,
        dict(
            type='visionllama_mm.SkipNonFiniteAmpOptimWrapper',
            dtype='bfloat16',
            optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(wrapper, SkipNonFiniteAmpOptimWrapper)
    scale = wrapper.loss_scaler.get_scale()
    before = params(model)
    with wrapper.optim_context(model):
        loss = model(torch.ones(2, 3, device='cuda')).sum() * float('nan')
    wrapper.update_params(loss)
    assert wrapper.loss_scaler.get_scale() == scale
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))

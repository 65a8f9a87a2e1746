"""One suite over every model (in the manner of timm's ``test_models.py``).

Every backbone registered in ``visionllama_mm.registry.MODELS`` and every
DiT / SiT net of the generation zoos is built for each of its archs, shrunk
to a tiny width (the arch's head count, 4 channels per head, two blocks per
stage) so the whole suite runs on a CPU in seconds; a new arch or a new
registered backbone is picked up automatically. Each gets: a forward at two
input sizes (one non-square), a gradient for every parameter, gradient
checkpointing equal to none, the fused attention equal to the reference
path, bf16 autocast close to fp32 and a seeded ``init_weights`` that is
deterministic.

The export and compile checks run once per backbone family at a tiny size:
legacy (TorchScript) and dynamo ONNX export run by onnxruntime, equal to
eager; ``torch.export.export``; ``torch.jit.trace`` of a fresh model;
``torch.compile`` forward and backward with no graph break and no
recompilation when only the batch size changes.
"""
import copy
import functools
import inspect
import warnings

import pytest
import torch
import torch.nn as nn

import visionllama_mm.backbones  # noqa: F401 (registers the backbones)
import visionllama_mm.selfsup  # noqa: F401
from visionllama_mm.generation.models import (DiTLLaMA, DiTLLaMA_models,
                                              SiTLLaMA, SiTLLaMA_models)
from visionllama_mm.registry import MODELS

HEAD_DIM = 4  # tiny width: 4 channels per head (2D RoPE needs 4k)


# ---------------------------------------------------------------------------
# the model zoo: every registered backbone x arch, every generation net
# ---------------------------------------------------------------------------
def registered_backbones():
    """Registered classes of this package that have an ``arch_zoo``."""
    out = {}
    for name, cls in sorted(MODELS.module_dict.items()):
        if (inspect.isclass(cls) and issubclass(cls, nn.Module)
                and isinstance(getattr(cls, 'arch_zoo', None), dict)
                and cls.__module__.startswith('visionllama_mm.')):
            out[name] = cls
    return out


def distinct_archs(zoo):
    """One name per distinct arch setting (aliases dropped)."""
    names, seen = [], []
    for name, settings in zoo.items():
        if settings not in seen:
            seen.append(settings)
            names.append(name)
    return names


def tiny_arch(cls, arch):
    """The arch's head layout at 4 channels per head and minimal depth."""
    s = copy.deepcopy(cls.arch_zoo[arch])
    if isinstance(s['embed_dims'], (list, tuple)):  # pyramid
        s['embed_dims'] = [h * HEAD_DIM for h in s['num_heads']]
        s['depths'] = [2] * len(s['depths'])  # one LSA + one GSA block
        return s
    ratio = s.get('feedforward_channels', 4 * s['embed_dims'])
    ratio /= s['embed_dims']
    s['embed_dims'] = s['num_heads'] * HEAD_DIM
    s['num_layers'] = 2
    if 'feedforward_channels' in s:
        s['feedforward_channels'] = int(ratio * s['embed_dims'])
    return s


def backbone_kwargs(cls):
    """Tiny-input settings: 4-pixel patches where the class has them."""
    params = {  # a subclass may take its base's arguments as **kwargs
        name
        for klass in cls.__mro__ if '__init__' in vars(klass)
        for name in inspect.signature(klass.__init__).parameters
    }
    kw = {}
    if 'patch_size' in params:
        kw['patch_size'] = 4
    if 'window_size' in params:
        kw['window_size'] = 3  # ViTDet windows, padded at these sizes
    if 'window_block_indexes' in params:
        kw['window_block_indexes'] = [0]
    return kw


@functools.lru_cache()
def generation_nets():
    """(name, class, kwargs) of every distinct DiT / SiT zoo entry."""
    out, seen = [], set()  # (built on 'meta': no memory, no init)
    for zoo in (DiTLLaMA_models, SiTLLaMA_models):
        for name, factory in zoo.items():
            with torch.device('meta'):
                full = factory(input_size=8)
            key = (type(full), full.patch_size, full.num_heads)
            if key in seen:
                continue
            seen.add(key)
            out.append((name, type(full),
                        dict(
                            input_size=8,
                            patch_size=full.patch_size,
                            in_channels=4,
                            hidden_size=full.num_heads * HEAD_DIM,
                            depth=2,
                            num_heads=full.num_heads,
                            num_classes=10,
                            class_dropout_prob=0.)))
    return out


class GenNet(nn.Module):
    """A DiT / SiT net with fixed timestep and label inputs (suite face)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        n = x.shape[0]
        t = torch.arange(n, device=x.device) * 97. + 1.  # batch-dynamic
        y = torch.arange(n, device=x.device) % 10
        return self.net(x, t, y)


def zoo_cases():
    cases = []
    for reg_name, cls in registered_backbones().items():
        for arch in distinct_archs(cls.arch_zoo):
            cases.append(pytest.param(reg_name, arch, id=f'{reg_name}-{arch}'))
    for name, cls, _ in generation_nets():
        cases.append(pytest.param('gen', name, id=f'{cls.__name__}-{name}'))
    return cases


def build(reg_name, arch):
    """A tiny model of ``arch``, with every parameter away from its init."""
    torch.manual_seed(0)
    if reg_name == 'gen':
        _, cls, kw = next(g for g in generation_nets() if g[0] == arch)
        model = GenNet(cls(**kw))
    else:
        cls = registered_backbones()[reg_name]
        model = cls(arch=tiny_arch(cls, arch), **backbone_kwargs(cls))
    randomize(model)
    return model


def randomize(model):
    """Perturb every parameter (DiT's zero-init layers would hide bugs)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def make_input(reg_name, batch, hw):
    if reg_name == 'gen':
        return torch.randn(batch, 4, hw[0] // 4, hw[1] // 4)
    return torch.randn(batch, 3, *hw)


def run(model, x):
    """Forward; MAE encoders without masking (deterministic)."""
    if 'mask' in inspect.signature(model.forward).parameters:
        return model(x, mask=False)
    return model(x)


def flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def set_attr_all(model, name, value):
    for m in model.modules():
        if hasattr(m, name):
            setattr(m, name, value)


SIZES = [(32, 64), (64, 32)]


# ---------------------------------------------------------------------------
# properties of every arch
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('reg_name,arch', zoo_cases())
def test_forward_two_sizes(reg_name, arch):
    model = build(reg_name, arch).eval()
    shapes = []
    for hw in SIZES:
        with torch.no_grad():
            outs = flat(run(model, make_input(reg_name, 2, hw)))
        assert outs and all(torch.isfinite(o).all() for o in outs)
        assert all(o.shape[0] == 2 for o in outs)
        shapes.append([tuple(o.shape) for o in outs])
    # spatial outputs follow the input (transposed grid -> transposed map)
    for a, b in zip(*shapes):
        if len(a) == 4:
            assert (a[2], a[3]) == (b[3], b[2])


@pytest.mark.parametrize('reg_name,arch', zoo_cases())
def test_every_parameter_gets_a_gradient(reg_name, arch):
    model = build(reg_name, arch).train()
    outs = flat(run(model, make_input(reg_name, 2, SIZES[0])))
    sum(o.float().square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def _loss_and_grads(model, x):
    model.zero_grad()
    outs = flat(run(model, x))
    sum(o.square().mean() for o in outs).backward()
    return ([o.detach() for o in outs], {
        n: p.grad.clone()
        for n, p in model.named_parameters()
    })


@pytest.mark.parametrize('reg_name,arch', zoo_cases())
def test_grad_checkpointing_equals_none(reg_name, arch):
    model = build(reg_name, arch).train()
    target = model.net if reg_name == 'gen' else model
    x = make_input(reg_name, 2, SIZES[1])
    outs, grads = _loss_and_grads(model, x)
    target.set_grad_checkpointing(True)
    outs_cp, grads_cp = _loss_and_grads(model, x)
    for a, b in zip(outs, outs_cp):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for n in grads:
        torch.testing.assert_close(grads[n], grads_cp[n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('reg_name,arch', zoo_cases())
def test_fused_attention_equals_reference(reg_name, arch):
    model = build(reg_name, arch).eval()
    x = make_input(reg_name, 2, SIZES[0])
    assert any(hasattr(m, 'fused_attn') for m in model.modules())
    with torch.no_grad():
        set_attr_all(model, 'fused_attn', True)
        fused = flat(run(model, x))
        set_attr_all(model, 'fused_attn', False)
        ref = flat(run(model, x))
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('reg_name,arch', zoo_cases())
def test_bf16_autocast_close_to_fp32(reg_name, arch):
    model = build(reg_name, arch).eval()
    x = make_input(reg_name, 2, SIZES[0])
    with torch.no_grad():
        ref = flat(run(model, x))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = flat(run(model, x))
    for a, b in zip(ref, low):
        assert torch.isfinite(b).all()
        err = (b.float() - a).norm() / a.norm().clamp_min(1e-6)
        assert err < 0.05, err


@pytest.mark.parametrize('reg_name,arch', zoo_cases())
def test_init_weights_deterministic(reg_name, arch):
    states = []
    for _ in range(2):
        model = build(reg_name, arch)
        built = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(123)
        if reg_name == 'gen':
            model.net.initialize_weights()
        else:
            model.init_weights()
        states.append(model.state_dict())
    # not vacuous: init_weights re-initialises some of the perturbed tensors
    assert any(not torch.equal(v, built[k]) for k, v in states[1].items())
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=0, rtol=0)


# ---------------------------------------------------------------------------
# export and compile, once per family at a tiny size
# ---------------------------------------------------------------------------
PLAIN = dict(embed_dims=16, num_layers=2, num_heads=2)


class MAEMasked(nn.Module):
    """MAE encoder's masked path with the masking noise as an input."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = MODELS.get('MAELLaMA')(arch=PLAIN, patch_size=4)

    def forward(self, x, noise):
        tokens, hw = self.enc.patch_embed(x)
        kept, mask, ids_restore, ids_keep = self.enc.random_masking(
            tokens, noise=noise)
        return self.enc.forward_kept(kept, ids_keep, hw), mask, ids_restore


def _gen(cls):
    return GenNet(
        cls(input_size=8,
            patch_size=2,
            in_channels=4,
            hidden_size=16,
            depth=2,
            num_heads=2,
            num_classes=10,
            class_dropout_prob=0.))


# family: (builder, the input size unit where height / width stay dynamic
# in exports, else 0)
FAMILIES = {
    'plain': (lambda: MODELS.get('VisionLLaMA')
              (arch=PLAIN,
               patch_size=4,
               with_cls_token=True,
               out_type='featmap',
               out_indices=(0, 1)), 4),
    # the class token's official position (W - 1, -1) and the pyramid's
    # GSA key positions / AS2DRoPE factors are Python numbers of the grid
    # size: exports specialise on height / width there
    'deit': (lambda: MODELS.get('VisionLLaMADeiT')
             (arch=PLAIN, patch_size=4, out_type='raw'), 0),
    'pyramid': (lambda: MODELS.get('PyramidVisionLLaMADET')
                (arch=dict(
                    embed_dims=[8, 16],
                    depths=[2, 2],
                    num_heads=[1, 2],
                    window_sizes=[3, 3],
                    sr_ratios=[4, 1],
                    patch_sizes=[4, 2]),
                 out_indices=(0, 1)), 0),
    'vitdet':
    (lambda: MODELS.get('LLaMADET')
     (arch=PLAIN, patch_size=4, window_size=3, window_block_indexes=[0]), 4),
    'mae': (MAEMasked, 4),
    'dit': (lambda: _gen(DiTLLaMA), 2),  # latents: 2-pixel patches
    'sit': (lambda: _gen(SiTLLaMA), 2),
}


def family_model(family):
    torch.manual_seed(0)
    return randomize(FAMILIES[family][0]()).eval()


def family_inputs(family, batch, hw):
    torch.manual_seed(batch * 1000 + hw[0])
    if family in ('dit', 'sit'):
        return (torch.randn(batch, 4, hw[0] // 4, hw[1] // 4), )
    x = torch.randn(batch, 3, *hw)
    if family == 'mae':
        return x, torch.rand(batch, (hw[0] // 4) * (hw[1] // 4))
    return (x, )


EXPORT_HW = (32, 40)  # ViTDet windows of 3 pad both sides either way


def second_inputs(family, dynamic_hw=None):
    """Another batch, and the transposed size where H / W are dynamic."""
    if dynamic_hw is None:
        dynamic_hw = bool(FAMILIES[family][1])
    return family_inputs(family, 3,
                         EXPORT_HW[::-1] if dynamic_hw else EXPORT_HW)


def eager(model, inputs):
    with torch.no_grad():
        return flat(model(*inputs))


def assert_outputs_close(got, want, atol=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = torch.as_tensor(g)
        assert g.shape == w.shape
        torch.testing.assert_close(g.to(w.dtype), w, atol=atol, rtol=1e-4)


def run_onnx(path, inputs):
    ort = pytest.importorskip('onnxruntime')
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [i.name for i in sess.get_inputs()]
    return [
        torch.from_numpy(o) for o in sess.run(None, {
            n: t.numpy()
            for n, t in zip(names, inputs)
        })
    ]


@pytest.mark.parametrize('family', list(FAMILIES))
def test_legacy_onnx_export(family, tmp_path):
    pytest.importorskip('onnx')
    model = family_model(family)
    inputs = family_inputs(family, 2, EXPORT_HW)
    names = [f'input{i}' for i in range(len(inputs))]
    axes = {n: {0: 'batch'} for n in names}
    if FAMILIES[family][1]:
        axes['input0'] = {0: 'batch', 2: 'height', 3: 'width'}
        if family == 'mae':
            axes['input1'] = {0: 'batch', 1: 'tokens'}
    path = str(tmp_path / 'model.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer warnings on shape numbers
        torch.onnx.export(
            model,
            inputs,
            path,
            dynamo=False,
            input_names=names,
            dynamic_axes=axes,
            opset_version=17)
    for x in (inputs, second_inputs(family)):
        assert_outputs_close(run_onnx(path, x), eager(model, x))


def export_dynamic_shapes(family, inputs, dynamic_hw):
    """``torch.export`` dims: the batch, and height / width if asked.

    Named dims (not ``Dim.AUTO`` everywhere): a symbolic height / width in a
    model that specialises on them (pyramid, DeiT) costs minutes of shape
    reasoning for nothing.
    """
    dim = torch.export.Dim
    batch = dim('batch', min=1, max=64)
    specs = [{0: batch} for _ in inputs]
    if dynamic_hw:
        unit = FAMILIES[family][1]
        specs[0][2] = unit * dim('h', min=2, max=64)
        specs[0][3] = unit * dim('w', min=2, max=64)
        if family == 'mae':  # masking noise: h * w tokens (not linear)
            specs[1][1] = dim.AUTO
    return tuple(specs)


# torch.export / dynamo ONNX cases: (family, dynamic height / width). The
# symbolic window padding of ViTDet makes its dynamic-size export slow (19
# CPU seconds, and 75 more for dynamo ONNX, vs 2 + 3 with a dynamic batch
# only), so the default suite exports it with a dynamic batch; the legacy
# exporter above checks its dynamic height / width.
EXPORT_CASES = [
    pytest.param(f, bool(FAMILIES[f][1]) and f != 'vitdet', id=f)
    for f in FAMILIES
] + [pytest.param('vitdet', True, id='vitdet-hw', marks=pytest.mark.slow)]


@pytest.fixture(scope='module')
def exported():
    """``torch.export`` programs of the cases, made once per module."""
    cache = {}

    def get(family, dynamic_hw):
        key = (family, dynamic_hw)
        if key not in cache:
            model = family_model(family)
            inputs = family_inputs(family, 2, EXPORT_HW)
            specs = export_dynamic_shapes(family, inputs, dynamic_hw)
            cache[key] = (model, inputs,
                          torch.export.export(
                              model, inputs, dynamic_shapes=specs))
        return cache[key]

    return get


@pytest.mark.parametrize('family,dynamic_hw', EXPORT_CASES)
def test_torch_export(family, dynamic_hw, exported):
    model, inputs, program = exported(family, dynamic_hw)
    for x in (inputs, second_inputs(family, dynamic_hw)):
        assert_outputs_close(flat(program.module()(*x)), eager(model, x))


@pytest.mark.parametrize('family,dynamic_hw', EXPORT_CASES)
def test_dynamo_onnx_export(family, dynamic_hw, exported, tmp_path):
    pytest.importorskip('onnxscript')
    model, inputs, program = exported(family, dynamic_hw)
    path = str(tmp_path / 'model.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(program, inputs, path, dynamo=True, verbose=False)
    for x in (inputs, second_inputs(family, dynamic_hw)):
        assert_outputs_close(run_onnx(path, x), eager(model, x))


@pytest.mark.parametrize('family', list(FAMILIES))
def test_jit_trace_fresh_model(family):
    """A fresh model (nothing cached) traces consistently."""
    model = family_model(family)
    inputs = family_inputs(family, 2, EXPORT_HW)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(model, inputs)  # checks a second trace
    assert_outputs_close(eager(traced, inputs), eager(model, inputs), 1e-5)


@pytest.mark.parametrize('family', list(FAMILIES))
def test_compile_no_graph_break(family):
    """Dynamo captures the training forward as one graph."""
    torch._dynamo.reset()
    model = family_model(family).train()
    inputs = family_inputs(family, 2, EXPORT_HW)
    explained = torch._dynamo.explain(model)(*inputs)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()


@pytest.mark.parametrize('family', list(FAMILIES))
def test_compile_train_no_batch_recompile(family):
    """fullgraph forward + backward (AOT autograd) equal eager; batch 3 and
    5 reuse the graph compiled for batch 2."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    model = family_model(family).train()
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for batch in (2, 3, 5):
        inputs = family_inputs(family, batch, EXPORT_HW)
        for x in inputs:
            torch._dynamo.mark_dynamic(x, 0)
        got = []
        for m in (compiled, model):
            model.zero_grad()
            outs = flat(m(*inputs))
            sum(o.float().square().mean() for o in outs).backward()
            got.append(([o.detach() for o in outs],
                        [p.grad.clone() for p in model.parameters()]))
        assert_outputs_close(got[0][0], got[1][0], 1e-5)
        assert_outputs_close(got[0][1], got[1][1], 1e-5)
    assert counter.frame_count == 1  # batch 3 and 5 reuse the graph
    torch._dynamo.reset()


def test_inductor_compile_train_step():
    """Inductor generates code for forward and backward (real RoPE): its
    outputs and gradients equal eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)  # one block: C++ codegen is most of the cost
    model = randomize(
        MODELS.get('VisionLLaMA')(
            arch=dict(PLAIN, num_layers=1),
            patch_size=4,
            with_cls_token=True,
            out_type='featmap')).train()
    compiled = torch.compile(model, fullgraph=True)
    x = family_inputs('plain', 2, EXPORT_HW)[0]
    got = []
    for m in (compiled, model):
        model.zero_grad()
        outs = flat(m(x))
        sum(o.square().mean() for o in outs).backward()
        got.append(
            ([o.detach()
              for o in outs], [p.grad.clone() for p in model.parameters()]))
    assert_outputs_close(got[0][0], got[1][0], 1e-5)
    assert_outputs_close(got[0][1], got[1][1], 1e-5)
    torch._dynamo.reset()

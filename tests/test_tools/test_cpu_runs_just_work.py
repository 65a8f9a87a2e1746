"""CPU runs just work: gloo for torchrun, bf16 autocast for --amp, image
files through the quick-start inferencer, readable visualisations, and the
Meta-LLaMA loader's refusal of unsafe files."""
import os.path as osp
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from tool_utils import load_tool

from visionllama_mm.compat import UnsafeCheckpointError, setup_cpu_distributed

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QUICK = osp.join(REPO, 'configs', 'quickstart',
                 'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')


@pytest.fixture(scope='module')
def train_tool():
    return load_tool('tools/train.py')


class TestAmp:

    def _cfg(self, **wrapper):
        cfg = Config.fromfile(QUICK)
        cfg.optim_wrapper.update(wrapper)
        return cfg

    def test_cpu_amp_is_bf16_autocast(self, train_tool, monkeypatch):
        monkeypatch.setattr(train_tool, '_has_amp_device', lambda: False)
        cfg = self._cfg()
        train_tool.configure_amp(cfg, True)
        assert cfg.optim_wrapper.type == 'visionllama_mm.CPUAmpOptimWrapper'
        # a config's AmpOptimWrapper (GPU only in mmengine) is replaced too
        cfg = self._cfg(type='AmpOptimWrapper', loss_scale='dynamic')
        train_tool.configure_amp(cfg, False)
        assert cfg.optim_wrapper.type == 'visionllama_mm.CPUAmpOptimWrapper'
        assert 'loss_scale' not in cfg.optim_wrapper

    def test_gpu_amp_is_mmengine_amp(self, train_tool, monkeypatch):
        monkeypatch.setattr(train_tool, '_has_amp_device', lambda: True)
        cfg = self._cfg()
        train_tool.configure_amp(cfg, True)
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
        cfg = self._cfg()
        train_tool.configure_amp(cfg, False)
        assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'

    def test_wrapper_trains_in_bf16(self):
        from mmengine.registry import OPTIM_WRAPPERS
        model = nn.Linear(4, 2)
        wrapper = OPTIM_WRAPPERS.build(
            dict(
                type='visionllama_mm.CPUAmpOptimWrapper',
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
        before = model.weight.detach().clone()
        with wrapper.optim_context(model):
            out = model(torch.randn(3, 4))
        assert out.dtype == torch.bfloat16
        wrapper.update_params(out.float().pow(2).mean())
        assert model.weight.dtype == torch.float32
        assert not torch.equal(model.weight, before)
        with pytest.raises(ValueError, match="dtype must be 'bfloat16'"):
            OPTIM_WRAPPERS.build(
                dict(
                    type='visionllama_mm.CPUAmpOptimWrapper',
                    dtype='float16',
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))


class TestCpuDistributed:

    def _setup(self, monkeypatch, backend):
        import torch.distributed as dist
        calls = []
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
        monkeypatch.setattr(dist, 'is_initialized', lambda: False)
        monkeypatch.setattr(dist, 'init_process_group',
                            lambda **kw: calls.append(kw))
        cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend=backend))))
        setup_cpu_distributed(cfg, 'pytorch')
        return cfg, calls

    @pytest.mark.parametrize('backend', ['nccl', 'gloo'])
    def test_gloo_without_cuda(self, monkeypatch, backend):
        cfg, calls = self._setup(monkeypatch, backend)
        assert calls == [dict(backend='gloo')]
        assert cfg.model_wrapper_cfg.device_ids is None

    def test_other_backend_is_named(self, monkeypatch):
        with pytest.raises(ValueError, match="got 'mpi'"):
            self._setup(monkeypatch, 'mpi')


@pytest.fixture(scope='module')
def digit_png(tmp_path_factory):
    import mmcv

    from visionllama_mm.datasets import MNIST5k
    sample = MNIST5k(split='test')[0]
    path = str(tmp_path_factory.mktemp('digit') / 'digit.png')
    mmcv.imwrite(sample['img'], path)
    return path, int(sample['gt_label'])


def test_to_grayscale():
    from visionllama_mm.datasets import ToGrayscale
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    colour = np.stack([grey] * 3, axis=-1)
    assert np.array_equal(ToGrayscale()(dict(img=colour))['img'], grey)
    assert np.array_equal(ToGrayscale()(dict(img=grey[..., None]))['img'],
                          grey)
    assert ToGrayscale()(dict(img=grey))['img'] is grey
    with pytest.raises(ValueError, match=r'got \(3, 4, 2\)'):
        ToGrayscale()(dict(img=np.zeros((3, 4, 2), np.uint8)))


def test_quickstart_inferencer_reads_a_png(digit_png, tmp_path):
    """The 1-channel quick-start model classifies a colour-loaded PNG."""
    from mmengine.registry import init_default_scope
    from mmpretrain import ImageClassificationInferencer
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(QUICK)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    ckpt = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    path, _ = digit_png
    inferencer = ImageClassificationInferencer(QUICK, pretrained=ckpt)
    (result, ) = inferencer(path)
    assert result['pred_label'] in range(10)
    assert len(result['pred_scores']) == 10
    # the colour-loaded file gives the scores of the dataset's grey digit
    from visionllama_mm.datasets import MNIST5k
    (grey, ) = inferencer(MNIST5k(split='test')[0]['img'])
    np.testing.assert_allclose(result['pred_scores'], grey['pred_scores'])


def test_quickstart_drawings_are_upscaled():
    from mmpretrain.structures import DataSample
    from mmpretrain.visualization import UniversalVisualizer
    cfg = Config.fromfile(QUICK)
    hook = cfg.default_hooks.visualization
    assert hook.type == 'VisualizationHook' and hook.resize == 224
    vis = UniversalVisualizer()
    digit = np.zeros((28, 28, 1), np.uint8)
    sample = DataSample().set_gt_label(3).set_pred_label(3).set_pred_score(
        torch.full((10, ), 0.1))
    drawn = vis.visualize_cls(digit, sample, resize=hook.resize)
    assert drawn.shape[:2] == (224, 224)


def test_meta_llama_loader_refuses_unsafe_file(tmp_path):
    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import \
        load_meta_llama_state_dict
    marker = str(tmp_path / 'ran')

    class Payload:

        def __reduce__(self):
            return subprocess.call, (['touch', marker], )

    path = str(tmp_path / 'consolidated.00.pth')
    torch.save({
        'tok_embeddings.weight': torch.zeros(2, 2),
        'x': Payload()
    }, path)
    with pytest.raises(UnsafeCheckpointError, match='subprocess.call'):
        load_meta_llama_state_dict(path, config=None)
    assert not osp.exists(marker)

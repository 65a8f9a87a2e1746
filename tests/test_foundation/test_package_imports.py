"""What `import visionllama_mm` pulls in, and the pinned stack imports."""
import json
import re
import subprocess
import sys

from foundation_utils import REPO_ROOT, TOY_CONFIG, subprocess_env


def _python(code):
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=REPO_ROOT,
                          env=subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    # drop log records that optional libraries print on import (deepspeed's
    # accelerator detection, when mmengine finds it installed)
    return '\n'.join(line for line in proc.stdout.splitlines()
                     if not re.match(r'\[\d{4}-\d\d-\d\d ', line))


def test_import_is_light():
    out = _python('import json, sys\n'
                  'import visionllama_mm, visionllama_mm.registry\n'
                  'print(json.dumps(sorted(m for m in sys.modules\n'
                  "    if m.split('.')[0] in ('mmdet', 'mmseg', 'mmagic'))))\n"
                  'print(visionllama_mm.__file__)\n')
    lines = out.strip().splitlines()
    assert json.loads(lines[-2]) == []
    assert lines[-1].startswith(REPO_ROOT)


LOADER = ('from mmengine.runner.checkpoint import CheckpointLoader\n'
          "loader = CheckpointLoader._get_checkpoint_loader('a.pth')\n"
          'print(loader.__module__)\n')


def test_package_import_leaves_mmengine_alone():
    # no import hook, no mmengine.runner import, mmengine's own loader
    out = _python('import json, sys, visionllama_mm, visionllama_mm.registry\n'
                  "state = ['mmengine.runner' in sys.modules, any(\n"
                  "    type(f).__module__.startswith('visionllama_mm')\n"
                  '    for f in sys.meta_path)]\n' + LOADER +
                  'print(json.dumps(state))\n')
    lines = _printed(out)
    assert lines[-2] == 'mmengine.runner.checkpoint'
    assert json.loads(lines[-1]) == [False, False]


def test_safe_loading_registered_explicitly():
    # the local-file loader becomes visionllama_mm.weights' (it converts
    # official layouts, then loads safely through compat)
    out = _python('import mmengine.runner\n'
                  'from visionllama_mm.compat import register_safe_loading\n'
                  'register_safe_loading()\n' + LOADER)
    assert _printed(out)[-1] == 'visionllama_mm.weights'
    # configs: custom_imports = dict(imports=['visionllama_mm.safe_loading'])
    out = _python('from mmengine.config import Config\n'
                  f'Config.fromfile({TOY_CONFIG!r})\n' + LOADER)
    assert _printed(out)[-1] == 'visionllama_mm.weights'


def _printed(out):
    """The printed lines of ``out`` without deepspeed's log lines
    (``[date time] [LEVEL] ...`` on stdout; mmengine.runner imports
    deepspeed when the optional package is installed)."""
    return [
        line for line in out.strip().splitlines()
        if not re.match(r'\[\d{4}-\d\d-\d\d [\d:,]+\] \[[A-Z]+\]', line)
    ]


def test_pinned_stack_imports():
    out = _python('import mmcv.ops, mmpretrain.models, mmseg.models, '
                  'mmdet.models, mmagic.models, visionllama_mm\n'
                  'import mmcv, mmengine, torch\n'
                  'print(mmcv.__version__, mmengine.__version__, '
                  'torch.__version__.split("+")[0])\n')
    assert out.strip().splitlines()[-1] == '2.1.0 0.10.7 2.13.0'

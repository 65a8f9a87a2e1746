"""What `import visionllama_mm` pulls in, and the pinned stack imports."""
import json
import re
import subprocess
import sys

from foundation_utils import REPO_ROOT, subprocess_env


def _python(code):
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=REPO_ROOT,
                          env=subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def test_import_is_light():
    out = _python('import json, sys\n'
                  'import visionllama_mm, visionllama_mm.registry\n'
                  'print(json.dumps(sorted(m for m in sys.modules\n'
                  "    if m.split('.')[0] in ('mmdet', 'mmseg', 'mmagic'))))\n"
                  'print(visionllama_mm.__file__)\n')
    lines = out.strip().splitlines()
    assert json.loads(lines[-2]) == []
    assert lines[-1].startswith(REPO_ROOT)


def test_mmengine_loader_patched_in_any_import_order():
    check = ('from mmengine.runner.checkpoint import CheckpointLoader\n'
             "loader = CheckpointLoader._get_checkpoint_loader('a.pth')\n"
             'print(loader.__module__)\n')
    # visionllama_mm first: the patch waits for mmengine.runner
    out = _python('import sys, visionllama_mm\n'
                  "print('mmengine.runner' in sys.modules)\n" + check)
    # the local-file loader is visionllama_mm.weights' (it converts official
    # layouts, then loads safely through compat)
    assert _printed(out)[-2:] == ['False', 'visionllama_mm.weights']
    # mmengine.runner first: patched on import of visionllama_mm
    out = _python('import mmengine.runner, visionllama_mm\n' + check)
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

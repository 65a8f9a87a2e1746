"""Run tools/train.py, pausing at one file-system step so that a test can
SIGKILL the process exactly there.

``KILL_POINT=<name>:<n>`` pauses the ``n``-th call of ``os.<name>``
(``fsync``, ``replace`` or ``remove``) *before* it runs: it creates the file
``KILL_MARKER`` and sleeps. Any other arguments go to tools/train.py.
"""
import os
import os.path as osp
import runpy
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _install() -> None:
    name, nth = os.environ['KILL_POINT'].split(':')
    marker, nth = os.environ['KILL_MARKER'], int(nth)
    original = getattr(os, name)
    calls = [0]

    def paused(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            with open(marker, 'w') as f:
                f.write(repr(args))
            time.sleep(600)
        return original(*args, **kwargs)

    setattr(os, name, paused)


if __name__ == '__main__':
    _install()
    train = osp.join(REPO, 'tools', 'train.py')
    sys.argv = [train] + sys.argv[1:]
    runpy.run_path(train, run_name='__main__')

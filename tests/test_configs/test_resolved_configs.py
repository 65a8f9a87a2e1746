"""Every shipped config resolves to what the committed snapshot says.

The snapshot (``tests/data/resolved_configs/``) is the resolved form of each
config under ``configs/``; a change that moves values around without meaning
to change a run (a shared ``_base_``, a renamed variable) must leave it
identical. An intended change regenerates it with
``python tools/misc/dump_resolved_configs.py --update``.
"""


def test_resolved_configs_match_snapshot(dump_tool, resolved_configs):
    assert resolved_configs, 'no shipped configs found'
    problems = dump_tool.compare(resolved_configs, dump_tool.read_snapshot())
    assert not problems, dump_tool.failure_message(problems)


def test_difference_report_names_configs_and_the_fix(dump_tool):
    snapshot = {
        'configs/a/kept.py': 'x = 1\n',
        'configs/a/changed.py': 'lr = 0.001\nmax_epochs = 300\n',
        'configs/b/removed.py': 'x = 1\n',
    }
    now = {
        'configs/a/kept.py': 'x = 1\n',
        'configs/a/changed.py': 'lr = 0.001\nmax_epochs = 100\n',
        'configs/b/added.py': 'x = 2\n',
    }
    assert dump_tool.compare(snapshot, snapshot) == []
    problems = dump_tool.compare(now, snapshot)
    assert [p.split(':')[0] for p in problems] == [
        'configs/a/changed.py', 'configs/b/added.py', 'configs/b/removed.py'
    ]
    assert '-max_epochs = 300' in problems[0]
    assert '+max_epochs = 100' in problems[0]
    assert 'lr = ' not in problems[0]  # unchanged lines are not listed
    message = dump_tool.failure_message(problems)
    assert 'dump_resolved_configs.py --update' in message


def test_snapshot_round_trip(dump_tool, tmp_path):
    dumps = {
        'configs/a/one.py': 'x = 1\n',
        'configs/b/sub/two.py': "y(0) = 'z'\n"
    }
    dump_tool.write_snapshot(dumps, str(tmp_path))
    assert dump_tool.read_snapshot(str(tmp_path)) == dumps
    # a config that is gone loses its snapshot file
    dump_tool.write_snapshot({'configs/a/one.py': 'x = 2\n'}, str(tmp_path))
    assert dump_tool.read_snapshot(str(tmp_path)) == {
        'configs/a/one.py': 'x = 2\n'
    }


def test_flat_form_keeps_types_and_normalises_the_repo_path(dump_tool):
    lines = []
    dump_tool._flatten(
        dict(b=(1, [2.5, 'r/x']), a=dict(), c=[], d=None), '', 'r', lines)
    assert lines == [
        'a = {}', 'b(0) = 1', 'b(1)[0] = 2.5', "b(1)[1] = '<repo>/x'",
        'c = []', 'd = None'
    ]

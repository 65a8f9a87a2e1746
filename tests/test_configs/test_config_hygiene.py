"""Every shipped config loads, registers safe checkpoint loading, and no
``_delete_`` marker survives merging.

mmengine only consumes ``_delete_`` where a base defines the same key; a
marker left over would reach a constructor as an unexpected argument (e.g.
``IterBasedTrainLoop(_delete_=True)``) only when the config is trained.
The configs are resolved once for the suite (see conftest.py); the resolved
form lists every key path, so a leftover marker is a path component.
"""


def leftover_delete_keys(text):
    return [
        line.split(' = ')[0] for line in text.splitlines()
        if '_delete_' in line.split(' = ')[0].replace('(', '.').replace(
            '[', '.').split('.')
    ]


def test_leftover_delete_is_found():
    text = "a.b = 1\ntrain_cfg._delete_ = True\nx[0]._delete_ = True\n"
    assert leftover_delete_keys(text) == [
        'train_cfg._delete_', 'x[0]._delete_'
    ]


def test_configs_have_no_leftover_delete(resolved_configs):
    found = {
        config: keys
        for config, text in resolved_configs.items()
        if (keys := leftover_delete_keys(text))
    }
    assert not found, ('`_delete_` has no base key to replace in: '
                       f'{found}')


def test_configs_register_safe_loading(resolved_configs):
    # custom_imports is a config's only hook into whichever train.py runs
    # it: importing visionllama_mm.safe_loading lets mmengine load runner
    # checkpoints on torch >= 2.6 (visionllama_mm.compat)
    missing = [
        config for config, text in resolved_configs.items()
        if "] = 'visionllama_mm.safe_loading'" not in text
    ]
    assert not missing, ("custom_imports = dict(imports=["
                         "'visionllama_mm.safe_loading', ...]) is missing "
                         f'in {missing}')

"""The flat public API: every advertised name resolves, and ``import modgap`` stays light."""

import subprocess
import sys

import pytest

import modgap


@pytest.mark.parametrize("name", modgap.__all__)
def test_every_public_name_resolves(name):
    assert getattr(modgap, name) is not None


def test_measure_is_measure_all():
    from modgap.measures import measure_all

    assert modgap.measure is measure_all


def test_unknown_name_is_attribute_error():
    with pytest.raises(AttributeError, match="no attribute"):
        modgap.no_such_thing  # noqa: B018


def test_import_does_not_load_torch():
    code = "import sys, modgap; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_subpackage_is_not_shadowed():
    import modgap.train

    assert modgap.train_matching_model is modgap.train.train
    assert modgap.load_train_config is modgap.train.load_config

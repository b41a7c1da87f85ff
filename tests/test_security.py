"""Nothing in a config is imported or instantiated by path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from sslsweep.config import ConfigError, from_dictconfig
from sslsweep.trainables.tasks import TASKS, get_task

PACKAGE = Path(__file__).resolve().parents[1] / "sslsweep"


def test_target_keys_in_a_config_are_rejected() -> None:
    """A `_target_` anywhere in the config is an unknown key, never instantiated."""
    for override in ("+encoder._target_=os.system", "+method.simclr._target_=os.system", "+_target_=os.system"):
        with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
            raw = compose(config_name="config", overrides=[override])
        with pytest.raises(ConfigError, match="_target_"):
            from_dictconfig(raw)


def test_only_registered_tasks_can_be_imported() -> None:
    """get_task imports only what the TASKS allow-list names, and only from the package."""
    with pytest.raises(ValueError, match="unknown method"):
        get_task("os:system")
    for entry in TASKS.values():
        assert entry.builder.startswith("sslsweep.trainables.tasks.")


def test_the_package_never_instantiates_from_config_or_loads_unsafe_pickles() -> None:
    """No hydra instantiate, no torch.load without weights_only=True, no pickle or np.load with
    pickles allowed (the decode cache is plain arrays), no import by arbitrary name."""
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the scan ran over the package, not an empty glob
    for f in files:
        text = f.read_text()
        assert "instantiate(" not in text, f
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{f}: {call}"
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{f}: {call}"
        assert not re.search(r"\bpickle\.loads?\(|allow_pickle=True", text), f
        if "import_module(" in text:  # only lazy imports of the package's own modules from fixed dicts
            assert str(f.relative_to(PACKAGE)) in ("trainables/tasks/__init__.py", "analysis/__init__.py",
                                                   "cli/__init__.py"), f


def test_the_command_line_imports_only_its_own_command_modules() -> None:
    """`sslsweep <command>` imports a module named in a fixed dict, never one named by the user."""
    from sslsweep.cli import COMMANDS, main

    assert all(module == f"sslsweep.cli.{name}" for name, module in COMMANDS.items())
    with pytest.raises(SystemExit) as exc:
        main(["os"])
    assert exc.value.code == 2

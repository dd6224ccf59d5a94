"""The registry: entry points, allow/deny lists, --plugin, collisions, listing."""

from __future__ import annotations

import json

import pytest

from lawlab.cli.main import main
from lawlab.registry import PluginError, load_registry

BUILTIN_KINDS = {
    "pruners": {"random-prunenet", "prunenet", "slicegpt"},
    "rft_recipes": {"lora"},
    "evaluators": {"cross-entropy", "lm-eval", "runtime"},
    "law_forms": {"compression-law", "ablation-r", "ablation-d", "runtime-law"},
    "model_sources": {"hub", "local", "gguf", "pack", "tiny"},
    "datasets": {"ptb", "wikitext2", "alpaca", "tiny-corpus"},
    "architectures": {"llama", "qwen2", "mistral", "gemma3_text"},
    "executors": {"local"},
}


def test_builtins_register_through_entry_points():
    registry = load_registry()
    assert not registry.broken, registry.broken
    for kind, names in BUILTIN_KINDS.items():
        assert names <= set(registry.names(kind)), kind
    for kind in BUILTIN_KINDS:
        for name in registry.names(kind):
            reg = registry.registration(kind, name)
            assert reg.plugin.distribution == "lawlab" and reg.plugin.builtin


def test_deny_list_keeps_a_plugin_out(monkeypatch):
    monkeypatch.setenv("LAWLAB_DISABLE_PLUGINS", "laws")
    registry = load_registry()
    assert registry.names("law_forms") == []
    with pytest.raises(KeyError, match="unknown law form 'compression-law'"):
        registry.get("law_forms", "compression-law")


def test_allow_list_still_loads_builtins(monkeypatch):
    monkeypatch.setenv("LAWLAB_PLUGINS", "some-third-party")
    registry = load_registry()
    assert "random-prunenet" in registry.names("pruners")


def test_extra_module_is_listed_with_what_it_registers(capsys):
    assert main(["--plugin", "lawlab_test_plugins", "plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    mine = [p for p in listing["plugins"] if p["plugin"] == "lawlab_test_plugins"]
    assert mine and mine[0]["registers"] == {"pruners": ["broken", "llama-only"], "evaluators": ["answering", "flaky", "sleepy"]}
    assert not mine[0]["builtin"]


def test_name_collision_names_both_plugins():
    with pytest.raises(PluginError) as err:
        load_registry(["collide_plugin"])
    msg = str(err.value)
    assert "'random-prunenet'" in msg and "collide_plugin" in msg and "random-prunenet" in msg
    assert "LAWLAB_DISABLE_PLUGINS" in msg


def test_collision_is_exit_2_on_the_command_line(capsys):
    assert main(["--plugin", "collide_plugin", "plugins"]) == 2
    assert "two plugins register the pruner 'random-prunenet'" in capsys.readouterr().err


def test_missing_extra_module_is_a_clear_error(capsys):
    assert main(["--plugin", "no_such_module_xyz", "plugins"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_plugins_table_lists_versions(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "random-prunenet" in out and "lawlab 0.1.0" in out


@pytest.mark.parametrize("command", ["validate", "plan", "run", "status", "export", "report", "schema", "plugins",
                                     "fit", "compare", "critical", "packs"])
def test_every_command_has_one_line_help_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out.lower() and "lawlab " + command in out

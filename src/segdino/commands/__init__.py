"""`segdino` command line: one command, a subcommand per job.

Each subcommand lives in its own module, which provides `configure(parser)` to declare its
flags and `run(args) -> int` to do the work. A `UserError` anywhere becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys
from typing import NoReturn

from segdino.errors import UserError
from segdino.version import __version__

# name -> (module, one-line help); modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("segdino.commands.train", "train the decoder on a dataset (backbone frozen)"),
    "test": ("segdino.commands.test", "score a trained model on a dataset split"),
    "predict": ("segdino.commands.predict", "segment images with a trained model"),
    "compare": ("segdino.commands.compare", "compare two test reports on the same images: "
                "paired differences, bootstrap CIs, Wilcoxon p-values"),
    "demo": ("segdino.commands.demo", "the whole workflow on generated data, no downloads needed"),
    "prepare": ("segdino.commands.prepare", "turn a dataset download into train/val/test folders"),
    "export": ("segdino.commands.export", "a trained model as one ONNX file, for ONNX Runtime"),
    "bench": ("segdino.commands.bench", "inference and training speed, engine by engine"),
    "ensemble": ("segdino.commands.ensemble", "combine compatible checkpoints into one model: "
                 "the backbone once, every decoder, probabilities averaged"),
    "publish": ("segdino.commands.publish", "a run as a Hugging Face model folder with its model "
                "card; --push uploads it"),
    "app": ("segdino.commands.app", "a web page to segment images, review a test report and "
            "correct masks (pip install segdino[app])"),
}


def shown_default(action: argparse.Action) -> str | None:
    """A flag's default as --help shows it; None where there is nothing to show (no default,
    or a switch, off by default)."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or action.nargs == 0:
        return None
    if isinstance(default, list | tuple):
        return " ".join(map(str, default))
    return str(default)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """ArgumentDefaultsHelpFormatter's defaults, without its "(default: None)" and "(default:
    False)", and not twice where a flag's own help already states it."""

    def _format_action(self, action: argparse.Action) -> str:
        shown = shown_default(action)
        if shown is not None and not (action.help and "default" in action.help
                                      and shown in action.help):
            action = copy.copy(action)  # the parser's own action keeps its help
            note = f"default: {shown}".replace("%", "%%")  # help strings are %-formatted
            action.help = f"{action.help} ({note})" if action.help else note
        return super()._format_action(action)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line naming the flag (no usage block), with
    exit code 2 like every other bad input, and whose --help shows every default."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="segdino", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segdino {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def reference_argv(argv: list[str]) -> list[str]:
    """The reference scripts' `--snake_case` flags in our `--kebab-case` spelling."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            arg = flag.replace("_", "-") + eq + value
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"segdino {argv[0]}" if argv and argv[0] in COMMANDS else "segdino"
    try:
        return _main(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # at any moment: the command's import, parsing or work
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def cli() -> None:
    """The `segdino` console script and `python -m segdino`: `main`, then exit with its code."""
    code = main()
    if code == 130:
        # A Ctrl-C that lands in code an extension module runs through PyRun_String (as
        # `import torch` does) sets CPython's "unhandled KeyboardInterrupt" flag though `main`
        # handled it, and the interpreter would end by killing itself with SIGINT (exit -2,
        # not 130). Everything was unwound on the way to `main`: leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage, or the unknown-command error
        return 2
    # The reference's --snake_case spellings are aliases of every flag, in every command.
    name, rest = argv[0], reference_argv(argv[1:])
    module = importlib.import_module(COMMANDS[name][0])
    parser = OneLineParser(prog=f"segdino {name}", description=COMMANDS[name][1])
    module.configure(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

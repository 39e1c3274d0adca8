"""One CLI: every default in --help, canonical flags and their aliases parse alike, the
workers' default follows the CPUs this process may use."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os

import pytest

from segdino.commands import COMMANDS, OneLineParser, main, shown_default
from segdino.commands.flags import MAX_DEFAULT_WORKERS, default_workers
from segdino.training.config import TrainConfig


def command_parser(name: str) -> OneLineParser:
    """The parser `segdino NAME` parses with (as `segdino.commands.main` builds it)."""
    parser = OneLineParser(prog=f"segdino {name}")
    importlib.import_module(COMMANDS[name][0]).configure(parser)
    return parser


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_every_default(name: str) -> None:
    parser = command_parser(name)
    shown = " ".join(parser.format_help().split())  # wrapping may break a default's words
    defaults = {}
    for action in parser._actions:
        if action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            continue  # no default to show: none, or a switch
        value = action.default
        text = " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        defaults[action.dest] = text
        assert text in shown, f"segdino {name} --help: {action.dest}'s default {text!r}"
    assert "default: None" not in shown and "default: False" not in shown
    # The formatter's own rendering agrees with the independent one above.
    assert {a.dest: shown_default(a) for a in parser._actions
            if shown_default(a) is not None} == defaults


def test_train_help_shows_the_run_settings_defaults() -> None:
    """train's flags default to None (a flag given is told from one left out): their help
    states TrainConfig's defaults."""
    actions = {a.dest: a for a in command_parser("train")._actions}
    for field in dataclasses.fields(TrainConfig):
        if field.default in (dataclasses.MISSING, None, False) or field.name == "num_workers":
            continue  # num_workers: the machine's CPUs (tested below), not TrainConfig's
        help_text = actions[field.name].help
        assert "default" in help_text and str(field.default) in help_text, field.name


def parse(name: str, *argv: str) -> argparse.Namespace:
    return command_parser(name).parse_args(list(argv))


POSITIONALS = {"predict": ["m.safetensors", "x.png", "--out", "o"], "export": ["m.safetensors"],
               "test": ["--ckpt", "m", "--data-dir", "d", "--dataset", "s"],
               "prepare": ["folder", "src", "out"], "publish": [], "train": [], "demo": [],
               "compare": ["a", "b"],
               "bench": []}
ALIASES = [  # (canonical, alias, value, commands taking it)
    ("--dino-ckpt", "--backbone", "w.pth", ("train", "test", "predict", "export", "publish")),
    ("--no-progress", "--quiet", None, ("train", "test", "predict", "demo", "bench")),
    ("--threshold", "--dice-thr", "0.3", ("train", "test", "predict")),
    ("--num-workers", "--workers", "3", ("train", "test", "prepare")),
]


@pytest.mark.parametrize(("canonical", "alias", "value", "name"),
                         [(c, a, v, n) for c, a, v, names in ALIASES for n in names])
def test_aliases_parse_as_the_canonical_flag(canonical: str, alias: str, value: str | None,
                                             name: str) -> None:
    given = [] if value is None else [value]
    plain = parse(name, *POSITIONALS[name])
    canonical_args = parse(name, *POSITIONALS[name], canonical, *given)
    assert canonical_args == parse(name, *POSITIONALS[name], alias, *given)
    assert canonical_args != plain  # the flag did something


@pytest.mark.parametrize("name", ["train", "test", "demo", "compare"])
def test_seed_is_one_flag(name: str) -> None:
    assert parse(name, *POSITIONALS[name], "--seed", "7").seed == 7


def test_workers_default_to_the_cpus_this_process_may_use() -> None:
    assert default_workers() == min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS)
    assert parse("test", *POSITIONALS["test"]).num_workers == default_workers()
    assert parse("prepare", *POSITIONALS["prepare"]).workers == default_workers()


def test_workers_default_follows_affinity(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))
    assert default_workers() == MAX_DEFAULT_WORKERS


@pytest.mark.parametrize(("name", "reference", "ours"), [
    ("export", ["m", "--dino_ckpt", "w.pth"], ["m", "--dino-ckpt", "w.pth"]),
    ("test", [*POSITIONALS["test"], "--dice_thr", "0.3", "--num_workers", "1"],
     [*POSITIONALS["test"], "--threshold", "0.3", "--num-workers", "1"]),
])
def test_reference_spellings_work_in_every_command(monkeypatch, name: str, reference: list[str],
                                                   ours: list[str]) -> None:
    seen: list[argparse.Namespace] = []
    module = importlib.import_module(COMMANDS[name][0])
    monkeypatch.setattr(module, "run", lambda args: seen.append(args) or 0)
    assert main([name, *reference]) == 0 and main([name, *ours]) == 0
    assert seen[0] == seen[1]

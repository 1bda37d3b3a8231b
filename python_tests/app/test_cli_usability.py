"""What a new user of the `zol2l` command meets: checked arguments before any loading, help on every option, the
banner's values, progress bars only on a terminal, `reproduce list`, and --target for their own model."""
import argparse
import io
import re

import pytest
import torch

from zol2l_ext import attack_setup as AS
from zol2l_ext import cli
from zol2l_ext.cli_args import resolve_progress

from test_cli import cache  # noqa: F401 - one user cache per module, the digits CNN trained once

# every subcommand the zol2l parser registers (a new one is checked without editing this list)
COMMANDS = tuple(next(a for a in cli.build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction)).choices)
INTERNAL = re.compile(r"\bissue\b|\b[a-z_]+\.[A-Z][A-Z_]{2,}\b")  # "the issue's", "attack.DEFAULT_LRS"


def _subparsers():
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_in_users_words(command):
    parser = _subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"zol2l {command} {name} has no help"
        assert not INTERNAL.search(action.help), f"zol2l {command} {name}: {action.help}"
    assert not INTERNAL.search(parser.description or ""), parser.description


@pytest.mark.parametrize("argv, message", [
    (["--q", "0"], "argument --q: must be an integer >= 1, got '0'"),
    (["--trials", "0"], "argument --trials: must be an integer >= 1"),
    (["--steps", "-3"], "argument --steps: must be an integer >= 1"),
    (["--mu", "-1"], "argument --mu: must be a number > 0, got '-1'"),
    (["--mu", "nan"], "argument --mu: must be a number > 0"),
    (["--c", "-0.5"], "argument --c: must be a number >= 0"),
    (["--count", "0"], "argument --count: must be an integer >= 1"),
])
def test_bad_numbers_fail_while_parsing(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(AS, "prepare_attack", lambda *a, **k: pytest.fail("loaded the target before checking"))
    with pytest.raises(SystemExit) as e:
        cli.main(["attack", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_budget_below_one_step_fails_before_loading(capsys, monkeypatch):
    monkeypatch.setattr(AS, "prepare_attack", lambda *a, **k: pytest.fail("loaded the target before checking"))
    assert cli.main(["attack", "--q", "5", "--budget", "4"]) == 2
    # one line, and no banner before it
    assert capsys.readouterr().err.splitlines() == [
        "zol2l attack: error: --budget 4 is below one step's q + 1 = 6 queries"]


def test_banner_shows_the_values_in_force(cache, tmp_path, capsys):
    rc = cli.main(["attack", "--q", "3", "--mu", "0.002", "--c", "0.2", "--steps", "2", "--trials", "1",
                   "--count", "1", "--optimizers", "zo-sgd", "--budget", "8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 0, err
    banner = next(line for line in err.splitlines() if line.startswith("zol2l attack:"))
    for part in ("1 digits images", "x 1 trials", "q=3", "mu=0.002", "c=0.2", "budget 8"):
        assert part in banner, banner


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize("flags, tty, bars", [
    ([], True, True), ([], False, False), (["--progress"], False, True), (["--no-progress"], True, False)])
def test_progress_bars_only_on_a_terminal_unless_asked(flags, tty, bars):
    args = cli.build_parser().parse_args(["attack", *flags])
    resolve_progress(args, stream=_Stream(tty))
    assert args.no_progress is (not bars)


def test_every_command_with_bars_takes_progress():
    for name, parser in _subparsers().items():
        if "--no-progress" in parser._option_string_actions:
            assert "--progress" in parser._option_string_actions, name


def test_reproduce_list_is_readable(capsys):
    assert cli.main(["reproduce", "list"]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and '"' not in out
    assert re.search(r"^\s+default: .*steps 200", out, re.M), out


# ------------------------------------------------------------------------------------------- your own target
FACTORY = '''
from zol2l_ext.digits import get_digits_model


def make_model():
    return get_digits_model(progress=False)[0]


def broken():
    raise RuntimeError("no weights here")
'''


def test_target_module_factory_and_model_file(cache, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_nets.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["attack", "--target", "my_nets:make_model", "--steps", "2", "--trials", "1", "--count", "2",
                   "--optimizers", "zo-sgd", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "(my_nets:make_model, pixel space)" in err
    from zol2l_ext.digits import get_digits_model

    torch.save(get_digits_model(progress=False)[0], tmp_path / "whole.pt")  # a whole pickled model
    rc = cli.main(["attack", "--target", "whole.pt", "--steps", "2", "--trials", "1", "--count", "2",
                   "--optimizers", "zo-sgd", "--out", str(tmp_path / "b")])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize("target, message", [
    ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
    ("my_nets:nothing", "my_nets has no attribute 'nothing'"),
    ("my_nets:broken", "broken() failed: RuntimeError: no weights here"),
    ("missing.pt", "'missing.pt': no such file"),
    ("garbage.pt", "not a model file torch can read"),
])
def test_target_that_cannot_load_says_why(cache, tmp_path, capsys, monkeypatch, target, message):
    (tmp_path / "my_nets.py").write_text(FACTORY)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["attack", "--target", target, "--steps", "1", "--count", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("zol2l attack: error: --target"), err

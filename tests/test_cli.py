"""The command line explains itself: a description for every subcommand, help text with defaults for every option,
plain text (no docstring markup, no internal names), a version, and logging set up once."""
import argparse
import subprocess
import sys

import pytest
import timm

import eca_timm
from eca_timm.cli import build_parser, main
from eca_timm.detection.command import _weights_backbone


def _commands(parser, path=()):
    yield path, parser
    for group in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for name, sub in group.choices.items():
            yield from _commands(sub, path + (name,))


COMMANDS = list(_commands(build_parser()))


def test_every_subcommand_is_there():
    names = {' '.join(path) for path, _ in COMMANDS}
    assert {'models', 'run', 'scripts', 'study', 'plot', 'quickstart', 'convert', 'publish', 'bench', 'detect',
            'detect train', 'detect eval', 'detect predict'} <= names


@pytest.mark.parametrize('path,parser', COMMANDS, ids=[' '.join(p) or 'eca-timm' for p, _ in COMMANDS])
def test_descriptions_and_option_help(path, parser, capsys):
    assert parser.description, f'{path}: no description'
    assert '``' not in parser.description and 'DEFAULTS' not in parser.description
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        assert action.help, f'{" ".join(path)} {action.option_strings or action.dest}: no help text'
    text = parser.format_help()
    if path == ('bench',):
        assert '(default: 8)' in text  # --batch-size: defaults are shown
    if path == ('detect', 'train'):
        assert 'default 12' in text and '(default: None)' not in text  # recipe-merged options say their default


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--version'])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f'eca-timm {eca_timm.__version__} (timm {timm.__version__}, torch {__import__("torch").__version__})')


@pytest.mark.slow
def test_info_messages_reach_the_terminal(tmp_path):
    """Logging is set up once in main: a command's INFO lines are printed (here: a model's ECA-init message)."""
    code = ('import logging, sys; from eca_timm.cli import main\n'
            'sys.argv = ["eca-timm", "models", "--json"]\n'
            'logging.getLogger("eca_timm.test").info("INFO LINE")\n'
            'main(["models", "--json"]); logging.getLogger("eca_timm.test").info("AFTER MAIN")\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert 'INFO LINE' not in out  # before main: nothing configured
    assert out.count('AFTER MAIN') == 1  # after main: one handler, one line


def test_weights_backbone_values_match_the_python_api():
    assert _weights_backbone('true') is True and _weights_backbone('pretrained') is True
    assert _weights_backbone(True) is True  # a recipe's YAML `true`
    assert _weights_backbone('none') is None and _weights_backbone(None) is None and _weights_backbone(False) is None
    assert _weights_backbone('backbone.safetensors') == 'backbone.safetensors'


@pytest.mark.parametrize('command', ['run', 'study', 'plot', 'quickstart', 'scripts'])
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit):
        main([command, '--help'])
    text = capsys.readouterr().out
    assert '\nexamples:\n  eca-timm ' in text
    assert '``' not in text


def test_commands_raise_and_only_console_prints(tmp_path, capsys):
    """One error path: the commands raise their user errors (``main``), ``console`` prints the one line."""
    used = tmp_path / 'used'
    used.mkdir()
    (used / 'x').write_text('x')
    for argv, error in ((['run'], ValueError), (['plot', str(tmp_path / 'missing')], FileNotFoundError),
                        (['quickstart', '--out', str(used)], FileExistsError),
                        (['study', str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')], FileNotFoundError)):
        with pytest.raises(error):
            main(argv)
        assert capsys.readouterr().err == '', argv  # nothing printed by the command itself

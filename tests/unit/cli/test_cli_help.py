"""Every command's ``--help`` (walked from build_parser(), so command groups that other
modules register are covered too): examples in the epilog, a help text for every option
and argument, durations with their units."""

from __future__ import annotations

import argparse
import re

from dockyard import config
from dockyard.cli import build_parser

DURATION = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|d|w)\b")


def _commands(parser: argparse.ArgumentParser, path: str = "dockyard"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name}: no help line in the command list"
                yield from _commands(sub, f"{path} {name}")


def test_every_command_has_examples_and_every_option_a_help_text():
    commands = dict(_commands(build_parser()))
    assert {"dockyard serve", "dockyard gc", "dockyard trash purge", "dockyard prune"} <= set(commands)
    problems = []
    for path, parser in commands.items():
        epilog = parser.epilog or ""
        lines = [line.strip() for line in epilog.splitlines()]
        if "examples:" not in epilog or not any(re.match(r"(\w+=\S+ )*dockyard \w", line) for line in lines):
            problems.append(f"{path}: no examples in its epilog (use cli.common.examples(...))")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{path} {name}: no help text")
            elif "duration" in action.help and not DURATION.search(action.help):
                problems.append(f"{path} {name}: a duration without an example with its unit")
        text = parser.format_help()  # formats (a stray % in a help text would raise here)
        assert epilog.splitlines()[-1].strip() in text if epilog else True
    assert not problems, "\n".join(problems)


def test_setting_defaults_show_durations_and_sizes_with_units():
    text = config.describe()
    for setting in config.SETTINGS:
        block = text.split(f"  {setting.name} / ", 1)[1].split("\n", 1)[0]
        default = block.rsplit("[", 1)[1].rstrip("]")
        if setting.parse is config.parse_duration:
            assert DURATION.fullmatch(default), (setting.name, default)
            assert config.parse_duration(default) == setting.default  # what --help shows reads back
        if setting.parse is config.parse_size:
            assert config.parse_size(default) == setting.default, (setting.name, default)
            assert default == "0" or not default.isdigit(), (setting.name, default)  # 0 = off
    assert "[7d]" in text and "[1h]" in text and "[64MiB]" in text

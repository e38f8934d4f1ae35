"""Every command, option and argument of `decision-service` says what it is for; the dates it
accepts are the API's (decision_service/dates.py)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from decision_service.cli import build_parser, main
from decision_service.dates import filter_date

DATE_OPTIONS = {"--from", "--to", "--as-of", "--baseline-from", "--baseline-to"}


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"command {' '.join((*path, name))} has no help"
                yield from _commands(sub, (*path, name))


def _actions() -> Iterator[tuple[str, argparse.Action]]:
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            yield f"{' '.join(path) or 'decision-service'} {name}", action


def test_the_tree_is_walked() -> None:
    commands = {" ".join(path) for path, _ in _commands(build_parser())}
    assert {"serve", "audit export", "keys list", "db current", "challengers report"} <= commands
    assert len(list(_actions())) > 60


ACTIONS = list(_actions())


@pytest.mark.parametrize("where,action", ACTIONS, ids=[where for where, _ in ACTIONS])
def test_every_option_and_argument_has_help(where: str, action: argparse.Action) -> None:
    assert action.help and action.help.strip(), f"{where} has no help"
    shown = action.metavar or action.dest.upper()
    if action.choices is None and isinstance(shown, str):
        assert not shown.endswith("_"), f"{where} shows as {shown}"  # e.g. FROM_


def test_dates_use_the_apis_parser() -> None:
    dated = [(w, a) for w, a in _actions() if DATE_OPTIONS & set(a.option_strings)]
    assert len(dated) >= 12  # audit replay/export, backtest, drift, challengers, rules check
    for where, action in dated:
        assert action.type is filter_date, where
        assert action.metavar == "DATE", where


def test_from_shows_as_date_and_bad_dates_get_the_apis_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "export", "--help"])
    out = capsys.readouterr().out
    assert "--from DATE" in out and "FROM_" not in out
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "export", "--from", "yesterday"])
    assert exit_.value.code == 2
    assert "expected a date (2026-11-24) or an RFC 3339 date-time" in capsys.readouterr().err

from __future__ import annotations

import argparse

import pytest

from mediagate.arguments import positive_int
from mediagate.cli import main


@pytest.mark.parametrize(("given", "expected"), [("1", 1), ("4", 4), ("+3", 3), (" 8 ", 8)])
def test_positive_int_takes_a_whole_number_of_at_least_one(given, expected):
    assert positive_int(given) == expected


@pytest.mark.parametrize("given", ["0", "-1", "two", "", "1.5"])
def test_positive_int_refuses_anything_else_naming_the_value(given):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        positive_int(given)
    assert str(refused.value) == f"must be a whole number of at least 1, not {given!r}"


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--workers"],
        ["upload", "clip.mp4", "--parallel"],
        ["upload", "clip.mp4", "--chunk-size"],
        ["migrate", "--batch-size"],
    ],
)
def test_every_command_refuses_a_count_below_one_in_the_same_words(capsys, command):
    with pytest.raises(SystemExit) as stopped:
        main([*command, "0"])
    assert stopped.value.code == 2
    option = command[-1]
    assert f"{option}: must be a whole number of at least 1, not '0'" in capsys.readouterr().err

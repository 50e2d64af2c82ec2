"""What the CLI prints for people: durations in human units."""

from __future__ import annotations

import pytest
from leanopsctl.cli.pipeline import human_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (45, "45s"),
        (60, "1m"),
        (723, "12m 3s"),
        (3_600, "1h"),
        (11_520, "3h 12m"),
        (187_200, "2d 4h"),
        (3_188_840, "36d 21h"),
        (-5, "0s"),
    ],
)
def test_durations_use_the_two_largest_units(seconds, text):
    assert human_duration(seconds) == text

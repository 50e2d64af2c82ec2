"""How often a topic's schedule starts it: the period of an EventBridge Scheduler expression.

The "no successful run" alarm compares the time since a topic's last success with its period, so the period
of a ``cron(...)`` schedule is its longest gap between two starts (``cron(0 2 * * ? *)``: a day;
``cron(0 9 ? * MON-FRI *)``: Friday to Monday, three days), never its shortest: a weekday topic must not
look stale every weekend. AWS cron syntax (six fields, ``?``, ``L``, ``W``, ``#``, 1 = Sunday) is parsed by
``aws-croniter``.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re

from aws_croniter import AwsCroniter
from aws_croniter.exceptions import AwsCroniterExpressionError

from leanops.errors import ConfigError

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_CRON = re.compile(r"cron\((.+)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_DAY = dt.timedelta(days=1)
#: A cron schedule's gaps are measured over this many days from the start of the current year: its yearly
#: pattern (months, last days of months, weekdays) twice over. A schedule that starts less than twice in it
#: (a year field in the past, 29 February only) has no period.
CRON_WINDOW_DAYS = 731


def period_seconds(expression: str | None, *, today: dt.date | None = None) -> int | None:
    """The longest interval between two starts of ``expression`` in seconds: ``rate(...)`` its interval,
    ``cron(...)`` its longest gap; None for ``at(...)`` (one start), no schedule, or a cron that starts less
    than twice in :data:`CRON_WINDOW_DAYS`.

    Raises
    ------
    ConfigError
        A ``rate`` or ``cron`` expression that EventBridge Scheduler would refuse.
    """
    if expression is None:
        return None
    text = expression.strip()
    if text.startswith("rate("):
        match = _RATE.fullmatch(text)
        if not match or int(match.group(1)) < 1:
            raise ConfigError(f"schedule {expression!r}: expected rate(<n> minutes|hours|days), n >= 1")
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]
    if text.startswith("cron("):
        match = _CRON.fullmatch(text)
        year = (today or dt.datetime.now(dt.UTC).date()).year
        return _cron_period(match.group(1).strip() if match else "", year)
    return None  # at(...): a one-time start has no period


@functools.cache
def _cron_period(fields: str, year: int) -> int | None:
    try:
        cron = AwsCroniter(fields)
    except (AwsCroniterExpressionError, ValueError) as exc:
        raise ConfigError(f"schedule cron({fields}): {exc}") from exc
    # Every day that starts fires at the same times of day (the minute and hour fields); the days are what
    # the other fields select. So the longest gap is within a day or from one firing day's last start to
    # the next one's first.
    times = sorted({hour * 3600 + minute * 60 for hour in cron.hours for minute in cron.minutes})
    within = max((b - a for a, b in itertools.pairwise(times)), default=0)
    start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    end = start + CRON_WINDOW_DAYS * _DAY
    days: list[dt.date] = []
    cursor = start
    while cursor < end:
        (found,) = cron.get_next(cursor, inclusive=True)
        if found is None or found >= end:
            break
        days.append(found.date())
        cursor = dt.datetime.combine(found.date() + _DAY, dt.time(), tzinfo=dt.UTC)
    if len(days) * len(times) < 2:
        return None
    span = times[-1] - times[0]
    across = max(((b - a).days * 86400 - span for a, b in itertools.pairwise(days)), default=0)
    return max(within, across)

"""How many examples a fuzz test tries (few in the normal test run, many on
demand), and how often a strategy draws the odd case.

The normal run (``pytest``, ``nox -s tests``) tries a short, fixed budget per test,
derandomized: the same examples every time, so a run never fails on an example
it met by chance. ``PUBSUB_FUZZ_EXAMPLES=N`` (what ``nox -s fuzz`` sets) makes every
fuzz test try ``N`` new random examples instead; a failure found there is saved in
Hypothesis's example database (``.hypothesis/``) and replayed first next time.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: The environment variable that asks for a long run, and how many examples then.
EXAMPLES_VARIABLE = "PUBSUB_FUZZ_EXAMPLES"


def budget(short: int) -> settings:
    """Settings for one fuzz test: ``short`` examples, or ``PUBSUB_FUZZ_EXAMPLES``.

    No deadline either way: a deadline is a timing assertion, and these tests
    assert behaviour (some examples carry 64 KiB frames and take longer).
    """
    examples = os.environ.get(EXAMPLES_VARIABLE)
    if examples:
        return settings(
            max_examples=int(examples),
            deadline=None,
            # Large frames are drawn on purpose; a long run should not stop at them.
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
    return settings(max_examples=short, deadline=None, derandomize=True)


def one_in(draw: st.DrawFn, times: int) -> bool:
    """True about once in ``times`` draws, shrinking to False (the plain case): how
    the strategies keep most input well-formed, so it reaches the code behind the
    first check, and break it now and then."""
    return draw(st.integers(min_value=1, max_value=times)) == times

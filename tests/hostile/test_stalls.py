"""Peak memory and the longest loop stall of the bomb and parser cases, each measured in a
fresh interpreter (see measure.py; benchmarks/hostile_stalls.py prints the same as a table).

The bounds are generous for a loaded 2-core machine (see MAX_STALL); before the fixes the
stacked-gzip bomb took 4.1 GiB and held the loop 35 s, and the never-closed reply held it
4.3 s (12.9 s for the call and its two re-asks).
"""

from __future__ import annotations

import pytest

from .measure import MAX_STALL, measure_in_subprocess

ASSERTED = [
    "bomb_gzip_gzip",
    "bomb_gzip",
    "bomb_gzip_x4",
    "deep_body_200",
    "parser_never_closed",
    "parser_deep_output",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", ASSERTED)
def test_hostile_cases_stay_within_memory_and_stall_bounds(case: str) -> None:
    measured = measure_in_subprocess(case)
    assert measured.outcome != "ok"  # each is refused with its typed error (measure checks)
    assert measured.seconds < 20
    assert measured.max_stall < MAX_STALL
    assert measured.rss_growth_mib < 100

import pytest

from coarse2fine.phases import Phase, build_phases, parse_schedule, restart_schedule, schedule_name


@pytest.mark.parametrize("text,expected", [
    ("1", (1,)), ("4-1", (4, 1)), ("2-1", (2, 1)), ("4-2-1", (4, 2, 1)), ("8>4>1", (8, 4, 1)),
    ("1-1", (1, 1)), ("1-1-1", (1, 1, 1)), ("2-2-1", (2, 2, 1)),
])
def test_parse_schedule(text, expected):
    assert parse_schedule(text) == expected
    assert parse_schedule(schedule_name(expected)) == expected


@pytest.mark.parametrize("bad", ["", "4", "1-4", "2-4-1", "1-2-1", "a-1", "0-1", "4-2", "1-1-2"])
def test_parse_schedule_rejects(bad):
    with pytest.raises(ValueError):
        parse_schedule(bad)


def test_restart_schedule_keeps_the_phases_at_full_resolution():
    assert restart_schedule((4, 1)) == (1, 1) and restart_schedule((4, 2, 1)) == (1, 1, 1)
    # The default split depends only on the number of phases: a restart control has the epochs of its schedule.
    assert [p.epochs for p in build_phases("1-1", 40)] == [p.epochs for p in build_phases("4-1", 40)] == [10, 40]
    assert [p.epochs for p in build_phases("1-1-1", 20)] == [p.epochs for p in build_phases("4-2-1", 20)] == [3, 3, 20]


def test_paper_phase_lengths():
    # Paper: 20-epoch baselines give a 5-epoch initial phase; AudioSet's 5 epochs give 1.
    assert build_phases("4-1", 20) == [Phase(4, 5), Phase(1, 20)]
    assert build_phases("2-1", 5) == [Phase(2, 1), Phase(1, 5)]
    # Three phases: 30 % of the budget split over the two initial phases (3 epochs each at 20).
    assert build_phases("4-2-1", 20) == [Phase(4, 3), Phase(2, 3), Phase(1, 20)]
    assert build_phases("1", 7) == [Phase(1, 7)]


def test_explicit_phase_epochs_and_errors():
    assert build_phases("4-1", 20, phase_epochs=[2, 9]) == [Phase(4, 2), Phase(1, 9)]
    assert build_phases("4-1", 20, final_epochs=12) == [Phase(4, 5), Phase(1, 12)]
    with pytest.raises(ValueError, match="2 phases"):
        build_phases("4-1", 20, phase_epochs=[1, 2, 3])
    with pytest.raises(ValueError):
        build_phases("4-1", 0)


@pytest.mark.parametrize("bad", ["4--1", "4-1-", "-4-1", "4-+1", "4,,1", "8>>4>1"])
def test_parse_schedule_refuses_empty_or_signed_parts(bad):
    # Dropping the empty part would read '4--1' as 4-1: a typo must not pass as another schedule.
    with pytest.raises(ValueError, match="expected factors joined by '-'"):
        parse_schedule(bad)

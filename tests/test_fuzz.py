"""A bounded run of the fuzz harness (benchmarks/fuzz.py runs the long one)."""

from benchmarks import fuzz


def test_hostile_files_give_codec_errors_only():
    tally, failures = fuzz.run(300, seed=1)
    assert failures == []
    assert tally["crashes"] == tally["hangs"] == 0
    assert tally["cli_tracebacks"] == tally["cli_bad_exit"] == tally["partial_files"] == 0
    assert tally["cli_internal_errors"] == 0
    assert tally["codec_error"] > 100  # the mutations really are hostile
    assert tally["cli_cases"] == 30

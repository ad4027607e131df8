"""The test setup itself (tests/conftest.py): the default tier compiles at LLVM -O0."""

import os

from tests import conftest


def _levels() -> list[str]:
    return [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith(conftest.OPT_LEVEL)]


def test_the_default_tier_compiles_at_o0_unless_a_level_is_set(pytestconfig, monkeypatch):
    """This run's flags, then the hook under other mark expressions and a user's own level."""
    if pytestconfig.option.markexpr.replace(" ", "") == "notslow":
        assert len(_levels()) == 1, _levels()  # -O0, or a level the user set before the run

    class Config:
        class option:
            markexpr = "not slow"

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    conftest.pytest_configure(Config)
    assert _levels() == [f"{conftest.OPT_LEVEL}=0"]
    conftest.pytest_configure(Config)  # an xdist worker runs the hook again: no second copy
    assert _levels() == [f"{conftest.OPT_LEVEL}=0"]

    monkeypatch.setenv("XLA_FLAGS", f"{conftest.OPT_LEVEL}=2")  # the user's own level stays
    conftest.pytest_configure(Config)
    assert _levels() == [f"{conftest.OPT_LEVEL}=2"]

    Config.option.markexpr = "slow"  # the slow tier keeps XLA's default
    monkeypatch.setenv("XLA_FLAGS", "")
    conftest.pytest_configure(Config)
    assert _levels() == []

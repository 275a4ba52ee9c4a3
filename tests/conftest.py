"""Hypothesis profiles for the test suite.

``make test`` is a gate that must give the same verdict on every run, so its property tests
draw a fixed (derandomised) set of examples and keep no example database. Exploring new
random examples is a separate, deliberate act::

    HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest tests/ -n 2

(``make test-explore``); a failure found there becomes an ``@example`` on the test.
"""

import os

from hypothesis import settings

settings.register_profile("gate", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


import pytest  # noqa: E402


@pytest.fixture
def registry_sandbox(monkeypatch):
    """Registrations made by a test (models, problems, cases) vanish after it."""
    import effdyn.registry as registry

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_PROBLEMS", dict(registry._PROBLEMS))
    monkeypatch.setattr(registry, "_CASES", dict(registry._CASES))
    return registry

"""The validation suite's cases as data, installed as ``effdyn.suite``.

``cases/*.toml`` holds one file per case (read by :mod:`effdyn.validation.cases`);
``example.toml`` is a commented ``effdyn run`` configuration. No code lives here: the
engine of the suite is :mod:`effdyn.validation`.
"""

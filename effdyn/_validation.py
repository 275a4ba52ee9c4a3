"""Deprecated name of :mod:`effdyn._checks` (argument checks); kept while other branches
still import it. Import from ``effdyn._checks``."""

from ._checks import *  # noqa: F401,F403
from ._checks import _describe, _float, _integer, _real_number  # noqa: F401

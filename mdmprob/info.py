"""Deprecated name of :mod:`mdmprob.measures` (the information measures); importing it warns.

The command ``mdmprob info`` is unchanged.
"""

from mdmprob.deprecation import moved_module
from mdmprob.measures import *  # noqa: F403
from mdmprob.measures import __all__  # noqa: F401

moved_module("mdmprob.info", "mdmprob.measures")

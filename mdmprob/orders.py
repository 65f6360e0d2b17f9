"""Deprecated path of :mod:`mdmprob.decoders.orders` (fixed decoding orders and the exact
rollouts of the order study); importing it warns."""

from mdmprob.decoders.orders import *  # noqa: F403
from mdmprob.decoders.orders import __all__  # noqa: F401
from mdmprob.deprecation import moved_module

moved_module("mdmprob.orders", "mdmprob.decoders.orders")

"""Deprecated name of :mod:`mdmprob.model_error` (measuring a denoiser's error); importing it warns."""

from mdmprob.deprecation import moved_module, renamed  # noqa: F401
from mdmprob.model_error import *  # noqa: F403
from mdmprob.model_error import __all__  # noqa: F401

moved_module("mdmprob.denoisers.error", "mdmprob.model_error")

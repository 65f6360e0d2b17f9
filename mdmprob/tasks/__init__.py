"""Task definitions (token layouts, test suites, metrics) for the paper's benchmark tasks.

* :mod:`mdmprob.tasks.addition`: D-digit addition "a + b = c" (paper-spec §3.2).
"""

from mdmprob.tasks import addition

__all__ = ["addition"]

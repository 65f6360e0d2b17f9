"""The tutorials' shared set-up: a smoke switch, headless figures, one intra-op thread, ``show``.

Each tutorial starts with ``SMOKE = setup()`` and displays its figures with ``show(fig, name)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def setup() -> bool:
    """Prepare a tutorial run and return the smoke switch.

    * smoke mode (``MDMPROB_SMOKE`` or ``CI`` set) shrinks the tutorials' sample counts;
    * outside a notebook kernel, or in smoke mode, figures go to the Agg backend (``plt.show()``
      does nothing);
    * torch runs ``MDMPROB_THREADS`` intra-op threads (default 1: the engine's tensors are small
      and many, so one thread is fastest on a CPU, as in the ``mdmprob`` command).
    """
    import matplotlib.pyplot as plt
    import torch

    smoke = bool("CI" in os.environ or os.environ.get("MDMPROB_SMOKE"))
    if smoke or "ipykernel" not in sys.modules:
        plt.switch_backend("Agg")
    torch.set_num_threads(int(os.environ.get("MDMPROB_THREADS", "1")))
    return smoke


def show(fig, name: str) -> None:
    """Display ``fig`` (inline in a notebook; nothing under Agg), also save it as
    ``$MDMPROB_FIGDIR/name.png`` when that variable is set, and free it."""
    import matplotlib.pyplot as plt

    folder = os.environ.get("MDMPROB_FIGDIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(folder) / f"{name}.png", dpi=100, bbox_inches="tight")
    plt.show()
    plt.close(fig)

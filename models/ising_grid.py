"""A rows x cols Ising grid of binary spins: a structure that is not a chain (treewidth = min(rows, cols)).

    p(x) ∝ exp( J * sum_{i~j} s_i s_j + h * sum_i s_i ),  s = 2x - 1,  4-neighbour grid

    x00 - x01 - x02 - x03
     |     |     |     |
    x10 - x11 - x12 - x13     tokens row-major; decoding blocks are the rows
     ...

Written with pyro.factor, so the model is unnormalised; the engine divides by Z exactly.
The constraint is "no disagreeing neighbours inside a row" (the ground states at J > 0).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int

from mdmprob.structure import Structure


def build(rows: int = 4, cols: int = 4, coupling: float = 0.5, field: float = 0.0) -> Structure:
    rows = check_int("rows", rows, 1, 8)
    cols = check_int("cols", cols, 1, 8)
    coupling, field = float(coupling), float(field)
    uniform = torch.tensor([0.5, 0.5], dtype=torch.float64)

    def model():
        spin = {}
        for r in range(rows):
            for c in range(cols):
                x = pyro.sample(f"x_{r}_{c}", dist.Categorical(uniform))
                s = 2.0 * x.to(torch.float64) - 1.0
                spin[r, c] = s
                pyro.factor(f"h_{r}_{c}", field * s)
                if r > 0:
                    pyro.factor(f"v_{r}_{c}", coupling * s * spin[r - 1, c])
                if c > 0:
                    pyro.factor(f"e_{r}_{c}", coupling * s * spin[r, c - 1])

    tokens = [f"x_{r}_{c}" for r in range(rows) for c in range(cols)]
    blocks = [list(range(r * cols, (r + 1) * cols)) for r in range(rows)]

    def rows_aligned(x: torch.Tensor) -> torch.Tensor:
        grid = x.reshape(x.shape[0], rows, cols)
        return (grid[..., 1:] == grid[..., :-1]).all(-1)

    return Structure(model, tokens, vocab=2, blocks=blocks, constraint=rows_aligned,
                     name="ising_grid", description=__doc__.splitlines()[0])

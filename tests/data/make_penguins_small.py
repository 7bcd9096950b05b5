"""Regenerate penguins_small.csv: synthetic, deterministic clusters shaped like Palmer penguins.

Run ``python tests/data/make_penguins_small.py`` from the project folder. The numbers are
made up (per-species means and spreads close to the real data set), so no licence or network.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SEED = 20240601
ROWS_PER_SPECIES = 40
COLUMNS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "species"]
# species: (mean, standard deviation) per feature column
SPECIES = {
    "Adelie": [(38.8, 2.7), (18.3, 1.2), (190.0, 6.5), (3700.0, 460.0)],
    "Chinstrap": [(48.8, 3.3), (18.4, 1.1), (196.0, 7.1), (3733.0, 384.0)],
    "Gentoo": [(47.5, 3.1), (15.0, 1.0), (217.0, 6.5), (5076.0, 504.0)],
}


def rows(seed: int = SEED) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for species, spec in SPECIES.items():
        for _ in range(ROWS_PER_SPECIES):
            bill_len, bill_depth, flipper, mass = (rng.gauss(mu, sd) for mu, sd in spec)
            out.append(
                [
                    f"{bill_len:.1f}",
                    f"{bill_depth:.1f}",
                    f"{flipper:.0f}",
                    f"{round(mass / 25) * 25:.0f}",
                    species,
                ]
            )
    rng.shuffle(out)
    return out


def main() -> None:
    path = Path(__file__).with_name("penguins_small.csv")
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows())


if __name__ == "__main__":
    main()

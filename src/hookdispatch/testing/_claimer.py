"""A claiming process for the multi-process conformance test.

``python -m hookdispatch.testing._claimer SPEC_JSON`` opens the store described by a
:class:`FactorySpec`, waits for a line on stdin (so all processes start together),
claims until nothing is due, and prints each claimed delivery id on its own line.
"""

from __future__ import annotations

import sys

from ._samples import BASE, LEASE
from ._spec import FactorySpec


def main(argv: list[str]) -> int:
    storage = FactorySpec.from_json(argv[1]).open()
    try:
        sys.stdin.readline()
        while batch := storage.claim(now=BASE, lease_until=BASE + LEASE, limit=2):
            for claim in batch:
                print(claim.delivery.id, flush=True)
    finally:
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

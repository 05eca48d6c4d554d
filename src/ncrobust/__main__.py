"""``python -m ncrobust`` and ``torchrun ... -m ncrobust``: the command line.

Under a torch.distributed launcher an uncaught exception is also recorded for the launcher,
which then names the failed rank and its error in its summary.
"""

from __future__ import annotations

import os

from ncrobust.cli import main

if __name__ == "__main__":
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # started by torchrun's agent
        from torch.distributed.elastic.multiprocessing.errors import record

        raise SystemExit(record(main)())
    raise SystemExit(main())

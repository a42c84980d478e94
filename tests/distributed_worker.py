"""One rank of the distributed tests: ``python distributed_worker.py SCENARIO[,SCENARIO] OUT``.

Started by tests/test_distributed.py with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set
(gloo on 127.0.0.1). Each scenario saves this rank's result (or the error it raised) as
``OUT/{scenario}_rank{rank}.pt``; the test compares them with single-process runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from distributed_cases import SCENARIOS, result_record  # noqa: E402

from fksteer.distributed import launch  # noqa: E402


def main() -> int:
    names, out = sys.argv[1].split(","), Path(sys.argv[2])
    communicator = launch.start_process_group("cpu")
    rank = communicator.rank
    for name in names:
        record: dict = {}
        try:
            value = SCENARIOS[name](communicator, record)
            record["result"] = None if value is None else result_record(value)
        except Exception as error:  # what each rank raised is the point of the error scenarios
            record["error_type"] = type(error).__name__
            record["error"] = str(error)
            record["notes"] = list(getattr(error, "__notes__", []))
        torch.save(record, out / f"{name}_rank{rank}.pt")
    launch.stop_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

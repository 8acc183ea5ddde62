"""Several commands in one pair of `accelerate launch` processes, for the tests that check the commands on two CPU
processes. Starting the pair (two interpreters importing torch and transformers, then the gloo group) costs more
than any one command does at toy size, so those tests share one launch (the `two_processes` fixture, conftest.py).

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m tests.two_processes PLAN.json

PLAN.json is a list of jobs `{"name": ..., "module": ..., "argv": [...]}`. Each runs in order as
`python -m <module> <argv>` would (the module's `__main__.main(argv)`), its stdout written to
`<plan directory>/<name>.stdout.<process index>`. The first job that fails ends the launch with its traceback on
stderr: the processes of a broken job could otherwise wait on each other in the next.

The commands leave the process group when they finish, as a launched command must before its interpreter exits;
here the jobs share one group (accelerate's state, which holds it, outlives each command), so it is left once,
after the last job, and the processes end with `os._exit` once their output is flushed: gloo's threads can abort
an interpreter that tears them down at exit.
"""

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path


def stdout_path(plan: Path, name: str, process: int) -> Path:
    return plan.parent / f"{name}.stdout.{process}"


def main(plan_file: str) -> None:
    import torch.distributed as dist

    process = int(os.environ["RANK"])  # set by the launcher; the commands set up accelerate's state themselves
    plan = Path(plan_file)
    leave = dist.destroy_process_group
    dist.destroy_process_group = lambda *args, **kwargs: None  # the commands' own leaving, until the last job
    for job in json.loads(plan.read_text()):
        command = importlib.import_module(f"{job['module']}.__main__").main
        with stdout_path(plan, job["name"], process).open("w") as out, contextlib.redirect_stdout(out):
            try:
                command(job["argv"])
            except SystemExit as e:
                if e.code not in (None, 0):
                    sys.exit(f"job {job['name']} failed on process {process}: {e.code}")
    if dist.is_initialized():
        dist.barrier()
        leave()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])

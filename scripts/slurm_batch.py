"""Run a batch on a Slurm cluster: dask-jobqueue asks Slurm for one job per GPU, each job runs one
Dask worker, and `invrev batch` submits the runs to them.

Run it on the login node, from a checkout on the file system the nodes share (the runs folder, the
model and this repository must be at the same paths there), in the environment that has invrev:

    python scripts/slurm_batch.py --experiments experiments/full.yaml --runs runs --jobs 8 \
        --partition gpu --account my_project --walltime 08:00:00

Each job books one GPU, ``--cpus`` cores and ``--memory``, and its worker runs one notebook at a
time. A job that ends (its wall time, a preempted node) takes its worker with it: Dask runs that
worker's task again on another, which takes over the run's claim and resumes it from its checkpoint.
Stopping this script stops the batch; starting it again skips what is done. Print the job script
Slurm would get with ``--show-job-script``.
"""

from __future__ import annotations

import argparse
import sys

from dask_jobqueue import SLURMCluster

from invrev import batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", required=True, help="experiment file, e.g. experiments/full.yaml")
    p.add_argument("--runs", default="runs", help="runs root on the shared file system (default: runs)")
    p.add_argument("--jobs", type=int, default=4, help="Slurm jobs, one GPU worker each (default 4)")
    p.add_argument("--partition", help="Slurm partition (queue)")
    p.add_argument("--account", help="Slurm account to charge")
    p.add_argument("--walltime", default="04:00:00", help="each job's time limit (default 04:00:00)")
    p.add_argument("--cpus", type=int, default=8, help="cores booked per job (default 8)")
    p.add_argument("--memory", default="32GB", help="memory booked per job (default 32GB)")
    p.add_argument("--prologue", action="append", default=[], metavar="LINE",
                   help="a shell line each job runs before its worker, e.g. 'module load cuda' (repeatable)")
    p.add_argument("--interface", help="network interface the nodes and this machine share, e.g. ib0 (default: Dask's choice)")
    p.add_argument("--joint", type=int, default=0, metavar="K", help="train K runs of a relation together first (see invrev batch)")
    p.add_argument("--show-job-script", action="store_true", help="print the job script and stop")
    args = p.parse_args(argv)
    # One thread per worker (cores=1): a worker runs one notebook at a time on its GPU; job_cpu books
    # the cores its notebook kernel and data loading use.
    cluster = SLURMCluster(queue=args.partition, account=args.account, walltime=args.walltime, cores=1, processes=1,
                           job_cpu=args.cpus, memory=args.memory, job_extra_directives=["--gres=gpu:1"],
                           job_script_prologue=args.prologue, python=sys.executable,
                           interface=args.interface)
    with cluster:
        if args.show_job_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        result = batch.run_batch(args.experiments, args.runs, joint=args.joint, scheduler=cluster.scheduler_address)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())

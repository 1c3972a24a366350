"""End-to-end scheduler throughput: schedulers claim, decide and commit jobs through one store.

    python -m loadtests.bench_schedulers                        # every case
    python -m loadtests.bench_schedulers --case k8s --runner both --json
    python -m loadtests.bench_schedulers --case scaling
    python -m loadtests.bench_schedulers --quick --json         # tiny sizes (the smoke test)

Cases:
  k8s      Kubernetes scheduler_perf SchedulingBasic/5000Nodes_10000Pods through a 3-member
           etcd: 5,000 nodes of 4 CPU / 32 GiB, 1,000 initial pods placed first (not
           measured), then 10,000 measured single-pod jobs of 100m / 500 MiB. Shape and
           upstream's minimum throughput come from ../shared/data/k8s_scheduler_perf
           (cases.csv, templates.csv); built-in copies are used, with a note, without it.
           Reports k8s_basic_pods_per_s beside upstream's minimum, k8s_keys_written_per_pod
           (etcd's count; the Ray run's when there is one) and k8s_bytes_written_per_pod (the
           threads run's clients), and with a Ray run k8s_ray_pods_per_s and
           k8s_ray_over_raw_txn (over the raw one-put txn/s of that run's own cluster). With --tracing off,file
           (--tracing-rounds N) it runs instead once per tracing mode and round, its jobs
           carrying traceparents (tracing_case.py), and reports k8s_tracing_off_pods_per_s,
           k8s_tracing_file_pods_per_s and k8s_tracing_file_cost.
  scaling  tasks/s for 1, 2, 4 and 8 schedulers (threads of one process) on the memory store,
           a 1-member and a 3-member etcd, in both conflict modes, with Omega's conflict
           fraction (conflicted claims per successful txn) and the fraction of failed txns.
           The schedulers run the BATCH preset unchanged (claim_batch 128, txns one by one).
           --runner both runs it on Ray actors too (etcd backends only); --homes on|off|both
           gives the N schedulers disjoint homes (gpu/home.py), or not, or runs both;
           --scaling-backends / --scaling-modes / --scaling-counts / --scaling-jobs narrow it.
           Every RESOURCE_FIT point runs --scaling-repeats (5) times, in rounds of N = 1, 2, 4,
           8, and counts as its median run (tasks/s and failed txn fraction apart): one run of a
           few seconds moves by 20-30% with this machine's load. Reports scaling_min_ratio
           (lowest median tasks/s with N >= 2 over the median with 1, over the RESOURCE_FIT
           series) and scaling_max_failed_txn_fraction (N >= 2; the worst single run's in
           scaling_max_failed_txn_fraction_any_run), per series in scaling_series, and with the
           suffix _without_homes for --homes off runs; the same for the 90% CPU load (scaling_90_*).

  backlog  one scheduler (BATCH, claim_batch 128) placing the first 1,000 single-task jobs of a
           queue of 1,000 and of one of 20,000, on one 3-member etcd, 3 repeats interleaved;
           reports backlog_ratio (best deep rate / best shallow rate). Submission not timed.
  sync     a cell of --sync-machines (100,000) machines, 3 labels and 10 bound tasks each,
           written directly; a SchedulerCache built on the memory store hosted in its Ray
           actor, and on a 3-member etcd, each timed against the raw read of the same keys
           through the same client (best of 3, interleaved); reports sync_100k_memory_s,
           sync_100k_etcd3_s, their _over_raw ratios and, in a separate tracemalloc pass,
           sync_100k_retained_bytes_per_machine.
  whole-cell
           the 12,457 Google 2011 machines live at the window's start, filled to 60% CPU
           with trace jobs drawn (seeded) from ../shared/data/google2011, all submitted at
           once and placed by --whole-cell-schedulers (3) schedulers with homes, on
           --whole-cell-backends (memory,etcd-3), as threads or Ray actors
           (--whole-cell-runner; Ray on memory: the store hosted in its Ray actor); the
           clock includes submission; then check_store. Reports whole_cell_<backend>_s (the
           faster runner's) and its tasks placed, jobs parked, violations. Skipped, with
           the reason, without the trace.

Method:
  - Machines and jobs are written in bulk before the measured phase (submission is timed
    on its own), as scheduler_perf creates its pods before measuring.
  - The measured phase runs from the start of scheduling until the store holds every
    measured pod bound: threads runner, the schedulers' own count of committed claims
    (each one counted after the store acknowledged its commit txn), polled every 5 ms;
    ray runner, a watch on the queue (a job's last binding deletes its queue entry in the
    same txn). Afterwards the store is checked: check_store(...).ok, every job PLACED,
    bound tasks = initial + measured.
  - Keys written per pod: etcd's own put and delete counters over the measured phase
    (etcd_mvcc_put_total + etcd_mvcc_delete_total); the split by key kind comes from the
    schedulers' store clients (threads runner).
  - `threads`: each Scheduler runs in a thread of this process with its own store client and
    a RealClock, built (snapshot taken) before the measured phase. `ray`: Ray actors
    (schedulers.ray_actors). They loop from construction, so the measured jobs are
    submitted behind a gate: a claim on every job, bound to one benchmark lease. Revoking
    it frees them all in one revision, and that is when the measured phase starts.
  - etcd clients talk to the leader by default (--clients leader): on 2 cores the extra
    hop through a follower, which forwards every write and read to the leader, costs CPU
    that the benchmark would otherwise attribute to the scheduler. --clients any picks a
    random member per client, as a deployment without leader awareness would.
  - The k8s case also measures the store's raw ceiling in the same run (bench_store's raw
    phases) and reports the measured phase's keys/s as a fraction of it.

Modules: ``workload`` (the k8s case, jobs and machines, the gate, the check), ``backends``
(memory or etcd), ``measuring`` (queue drain, counting store client), ``runners`` (threads,
Ray actors), ``runs`` (one run and its report row), ``cases`` (k8s, scaling), ``backlog``,
``sync``, ``whole_cell``, ``tracing_case`` (one case each), ``report`` (tables), ``cli``
(arguments, the JSON line).
"""

from .cli import main
from .runs import RunResult, RunSpec, run_once
from .workload import BenchmarkError, K8sCase, load_k8s_case

__all__ = ["BenchmarkError", "K8sCase", "RunResult", "RunSpec", "load_k8s_case", "main", "run_once"]

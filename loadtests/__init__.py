"""cellsched.loadtests: what serves replays and tests, not the product.

Trace readers (``loadtests.traces``), the etcd process helper (``loadtests.etcd_process``),
the replay driver and the benchmarks, each run as ``python -m loadtests.NAME``. The
command modules are not imported here, so running one does not import it twice.
"""

from .etcd_process import EtcdCluster, EtcdMember, etcd_binary, start_etcd_cluster
from .replay import ReplayDriver, ReplayProgress, Workload, google_workload

__all__ = [
    "EtcdCluster",
    "EtcdMember",
    "ReplayDriver",
    "ReplayProgress",
    "Workload",
    "etcd_binary",
    "google_workload",
    "start_etcd_cluster",
]

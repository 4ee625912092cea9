"""Which Dask cluster a distributed computation runs on: :func:`connect`.

``client=None`` means serial (no Dask); ``"local"`` starts a
:class:`distributed.LocalCluster` on this machine (worker processes, one
thread each, loopback, HTTP on a free loopback port) for the duration of the computation;
a :class:`distributed.Client` is used as it is (its cluster may be a
dask-jobqueue or Kubernetes one); a string is a scheduler address
(``"tcp://10.0.0.5:8786"``) to connect to.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

logger = logging.getLogger(__name__)

#: Where a LocalCluster's scheduler serves HTTP: loopback, a free port. Its scheduler always starts an HTTP
#: server (health and metrics routes, even with no dashboard), by default on *:8787; a second cluster on the
#: machine (another user's, a test's) would then move it with a warning.
LOOPBACK_HTTP = "127.0.0.1:0"


def describe_client(client) -> str:
    """What ``client`` is, for an error message: its type, never its contents."""
    return f"{type(client).__name__} {client!r}" if isinstance(client, str) else type(client).__name__


@contextlib.contextmanager
def connect(client, *, n_workers: int | None = None) -> Iterator[object]:
    """A :class:`distributed.Client` for the option ``client`` (not None), closed at the end if made here.

    Parameters
    ----------
    client : "local", distributed.Client or str
        ``"local"``: a LocalCluster of ``n_workers`` processes (default
        the number of cores), one thread each, on 127.0.0.1, its HTTP on a free loopback port,
        stopped when the block ends; a Client: used as it is, left open; any
        other string: the address of a running scheduler.
    n_workers : int, optional
        Workers of the ``"local"`` cluster.
    """
    from distributed import Client, LocalCluster

    if isinstance(client, Client):
        yield client
        return
    if not isinstance(client, str) or not client:
        raise TypeError(f"client={describe_client(client)}: allowed None (serial), 'local' (a LocalCluster on this "
                        "machine), a distributed.Client, or a scheduler address such as 'tcp://host:8786'")
    if client == "local":
        n = n_workers or os.cpu_count() or 1
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=LOOPBACK_HTTP) as cluster, Client(cluster) as made:
            logger.info("started a LocalCluster of %d worker processes at %s", n, cluster.scheduler_address)
            yield made
        return
    if "://" not in client and ":" not in client:
        raise ValueError(f"client={client!r} is neither 'local' nor a scheduler address; give e.g. "
                         "'tcp://10.0.0.5:8786' (the address `dask scheduler` prints)")
    with Client(client) as made:
        logger.info("connected to the Dask scheduler at %s", client)
        yield made

"""A worker plugin for the local clusters of sweeps (imported only where Dask is)."""

from __future__ import annotations

import signal
import threading

from distributed import WorkerPlugin


class IgnoreCtrlC(WorkerPlugin):
    """Local worker processes share the terminal's process group, so Ctrl-C reaches them
    too; they ignore it and let the client save the records and close the cluster (instead
    of each dying with a traceback while the client still waits on them)."""

    name = "effdyn-ignore-ctrl-c"
    idempotent = True

    def setup(self, worker):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

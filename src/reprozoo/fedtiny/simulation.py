"""Running server jobs against FedTiny clients without a deployment: Flower's simulation engine (Ray) or
an in-process grid.

``run_federated(jobs, n_clients, engine=...)`` runs server jobs (e.g.
:class:`~reprozoo.fedtiny.server.ServerJob`) on Flower's simulation engine (``engine="flower"``:
``flwr.simulation.run_simulation`` on Ray) or in process (``engine="local"``: a :class:`LocalGrid` that
calls the same ``ClientApp`` directly, no Ray) for fast tests.  Both run the deployment's
:data:`~reprozoo.fedtiny.deployment.client_app`; a real deployment (``flwr run``) runs it unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.task_identity import TaskIdentity

from reprozoo.core.checks import check_int
from reprozoo.core.progress import is_quiet
from reprozoo.fedtiny.deployment import client_app

__all__ = ["LocalGrid", "run_federated", "make_server_app", "SimulationStopped"]


# -- the ServerApp of a simulation ----------------------------------------------------------------------
class SimulationStopped(RuntimeError):
    """Raised in the ServerApp thread by a grid call once :func:`run_federated` was interrupted."""


class _StoppableGrid(Grid):
    """Delegates to ``inner``; ``send_and_receive`` polls in short steps and raises
    :class:`SimulationStopped` once ``stop`` is set, so an interrupted simulation's ServerApp thread (not a
    daemon: the interpreter waits for it at exit) ends within ``poll`` seconds instead of waiting out the
    reply timeout (Flower's in-memory grid does not watch its own stop event)."""

    def __init__(self, inner: Grid, stop: threading.Event, poll: float = 0.1) -> None:
        self.inner, self.stop, self.poll = inner, stop, float(poll)

    def _check(self) -> None:
        if self.stop.is_set():
            raise SimulationStopped("the Flower simulation was interrupted")

    def set_run(self, run_id: int) -> None:  # noqa: D401 - Grid API
        self.inner.set_run(run_id)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._check()
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._check()
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (end is None or time.monotonic() < end):
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending and self.stop.wait(self.poll):
                self._check()
        return replies


def make_server_app(jobs: Sequence[Callable[[Grid], Any]], results: list, stop: threading.Event | None = None,
                    began: threading.Event | None = None, done: threading.Event | None = None) -> ServerApp:
    """A ``ServerApp`` whose main runs each ``job(grid)`` in turn, appending their returns to ``results``
    (an exception is appended instead and stops the remaining jobs).

    With ``stop``, the jobs see a grid whose calls raise :class:`SimulationStopped` once ``stop`` is set;
    ``began`` / ``done`` (if given) are set when the main starts / returns, however it ends."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        if began is not None:
            began.set()
        if stop is not None:
            grid = _StoppableGrid(grid, stop)
        try:
            for job in jobs:
                try:
                    results.append(job(grid))
                except BaseException as exc:  # surfaced by run_federated
                    results.append(exc)
                    return
        finally:
            if done is not None:
                done.set()

    return app



# -- in-process grid -------------------------------------------------------------------------------------
# -- in-process grid -------------------------------------------------------------------------------------
class LocalGrid(Grid):
    """A ``Grid`` that delivers each message to ``client_app`` in this process (no Ray, no network).

    Node ids are 1..n; node i-1's ``node_config`` is ``{"partition-id": i-1, "num-partitions": n}``, as
    in Flower's simulation engine.  An exception raised by the client becomes an error reply
    (``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``), as on a real deployment.
    """

    def __init__(self, app: ClientApp, num_nodes: int) -> None:
        if int(num_nodes) < 1:
            raise ValueError(f"num_nodes={num_nodes} should be >= 1")
        self.app = app
        self.node_ids = list(range(1, int(num_nodes) + 1))
        self.contexts = {n: Context(run_id=0, node_id=n, node_config={"partition-id": n - 1, "num-partitions": len(
            self.node_ids)}, state=RecordDict(), run_config={}) for n in self.node_ids}
        self._run = None

    def set_run(self, run_id: int) -> None:  # noqa: D401 - Grid API
        self._run = run_id

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def get_nodes(self):
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LocalGrid delivers synchronously; use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid delivers synchronously; use send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for m in messages:
            try:
                replies.append(self.app(m, self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # noqa: BLE001 - a failing client is a reply, not a crash
                replies.append(Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(exc)), reply_to=m))
        return replies


@contextlib.contextmanager
def _local_identity():
    """Flower stamps messages with the current task's identity; set one for in-process runs."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id = saved[0] if saved[0] is not None else 0
    TaskIdentity.node_id = saved[1] if saved[1] is not None else 0
    TaskIdentity.task_id = saved[2] if saved[2] is not None else 0
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class _DropRunSimulationDeprecation(logging.Filter):
    """Drops Flower's "DEPRECATED FEATURE: The `run_simulation` function is deprecated" banner."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not ("DEPRECATED FEATURE" in msg and "run_simulation" in record.getMessage())


@contextlib.contextmanager
def _quiet_flower(level: int = logging.WARNING):
    logger = logging.getLogger("flwr")
    old = logger.level
    banner = _DropRunSimulationDeprecation()
    logger.setLevel(level)
    logger.addFilter(banner)
    try:
        yield
    finally:
        logger.removeFilter(banner)
        logger.setLevel(old)


def run_federated(jobs: Sequence[Callable[[Grid], Any]], n_clients: int, engine: str = "flower",
                  num_cpus: int = 2, verbose: bool = False) -> tuple[list[Any], float]:
    """Run server ``jobs`` (each ``job(grid) -> value``) against ``n_clients`` FedTiny clients.

    Parameters
    ----------
    jobs : callables ``job(grid) -> value``, e.g. :class:`~reprozoo.fedtiny.server.ServerJob`
    n_clients : number of client nodes; must equal ``config.n_clients`` of every
        :class:`~reprozoo.fedtiny.server.ServerJob` (``ValueError`` naming both otherwise)
    engine : "flower" (Flower's simulation engine, Ray; one actor per CPU) or "local" (:class:`LocalGrid`)
    num_cpus : CPUs given to Ray (each client actor takes one)

    Returns ``(values, seconds)``; re-raises the first job's exception.

    Interrupts (engine "flower"): a KeyboardInterrupt, or whatever the caller's SIGTERM handler raises,
    stops the simulation (the ServerApp thread ends at its next grid call), shuts Ray down when this call
    started it, puts the caller's SIGINT/SIGTERM handlers back (Ray replaces SIGTERM's at init; they are
    also put back right after ``ray.init``) and is re-raised.

    Output: client failures ("client 1 failed: ...", the partition index) go through :func:`reprozoo.core.progress.log`
    (silent under ``--quiet`` and pytest) and the ``reprozoo.fedtiny`` logger at INFO. Flower's
    own logger is set to WARNING (ERROR when quiet; INFO with ``verbose``) for the run, and its
    "run_simulation is deprecated" banner is filtered out (we call ``run_simulation`` on purpose:
    it is the in-process simulation API; ``flwr run`` needs a project folder and a SuperLink).
    """
    if engine not in ("flower", "local"):
        raise ValueError(f"engine={engine!r} should be 'flower' or 'local'")
    check_int(n_clients, "n_clients", low=1)
    for i, job in enumerate(jobs):
        config = getattr(job, "config", None)  # a ServerJob's
        if config is not None and int(config.n_clients) != n_clients:
            raise ValueError(f"jobs[{i}] was made for config.n_clients={config.n_clients} but run_federated got "
                             f"n_clients={n_clients}: node i serves data partition i, so the two must match")
    results: list[Any] = []
    t0 = time.perf_counter()
    with _quiet_flower(logging.INFO if verbose else logging.ERROR if is_quiet() else logging.WARNING):
        if engine == "local":
            grid = LocalGrid(client_app, n_clients)
            with _local_identity():
                for job in jobs:
                    results.append(job(grid))
        else:
            _run_flower(jobs, results, n_clients, num_cpus, verbose)
    for r in results:
        if isinstance(r, BaseException):
            raise RuntimeError(f"a server job failed in the Flower simulation: {r!r}") from r
    if len(results) != len(jobs):
        raise RuntimeError(f"the Flower simulation returned {len(results)} of {len(jobs)} job results; "
                           "see the Flower log above (run with verbose=True)")
    return results, time.perf_counter() - t0


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _restore_handlers(saved: Mapping[int, Any]) -> None:
    """Reinstall the caller's Python signal handlers (``signal.signal`` also resets the C-level handler,
    which Ray's core worker replaces at init with a failure handler that aborts on SIGTERM: exit 134)."""
    for sig, handler in saved.items():
        if handler is not None:  # None: not installed from Python, nothing we can restore
            signal.signal(sig, handler)


def _install_stopping_handlers(saved: Mapping[int, Any], stop: threading.Event) -> None:
    """For the simulation: SIGINT / SIGTERM first set ``stop`` (the ServerApp thread and Flower's error log
    go quiet at once), then run the caller's handler (which raises, e.g. KeyboardInterrupt).  Handlers that
    are not Python callables (SIG_IGN, SIG_DFL, None) are left as they are."""
    for sig, handler in saved.items():
        if callable(handler):
            def _stopping(signum: int, frame: Any, _handler: Callable = handler) -> Any:
                stop.set()
                return _handler(signum, frame)

            signal.signal(sig, _stopping)


class _HushAfterStop(logging.Filter):
    """Drops Flower's records once ``stop`` is set: after an interrupt its Ray workers report the actors
    we (or the signal) ended as errors with tracebacks, which is noise, not a failure of the run."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.stop.is_set()


def _init_ray(num_cpus: int, verbose: bool, saved: Mapping[int, Any]) -> bool:
    """Start Ray as Flower's Ray backend would (``RayBackend.init_ray``: same init args and PYTHONPATH for
    the actors), then give the caller its signal handlers back.  Returns whether we started Ray."""
    import ray  # here, not at module level: the local engine's worker processes never start Ray

    if ray.is_initialized():
        return False
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    # Ray's daemons (GCS, raylet, and the workers they fork) inherit this thread's signal mask: with SIGTERM
    # blocked they outlive a SIGTERM sent to the whole process group (``timeout``, a job runner), so the
    # driver can still shut Ray down in order; otherwise Ray calls in the driver block on the dead GCS and
    # Ray ends the process after 60 s (exit 1, no cleanup). Ray blocks SIGINT in them itself.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if saved else None
    try:
        try:
            # the client actors request no GPU (several share one), so Ray would hide every GPU from them
            # (CUDA_VISIBLE_DEVICES=""); with NOSET they see the driver's GPUs and ``cuda:N`` names the same one
            env = {"PYTHONPATH": pythonpath, "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
            ray.init(runtime_env={"env_vars": env}, num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=verbose)
        finally:
            _restore_handlers(saved)  # first: a SIGTERM that came during init goes to the caller's handler
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    except SystemExit as exc:
        # a SIGTERM that reached Ray's own handler (sys.exit(15)); hand it to the caller's handler
        if ray.is_initialized():
            ray.shutdown()
        handler = saved.get(signal.SIGTERM)
        if exc.code == signal.SIGTERM and callable(handler):
            handler(signal.SIGTERM, None)
        raise
    except BaseException:
        if ray.is_initialized():
            ray.shutdown()
        raise
    return True


def _run_flower(jobs: Sequence[Callable[[Grid], Any]], results: list, n_clients: int, num_cpus: int,
                verbose: bool) -> None:
    """``flwr.simulation.run_simulation`` of ``jobs``; on an interrupt (KeyboardInterrupt, or the caller's
    SIGTERM handler raising) it stops the ServerApp thread, shuts Ray down if we started it, restores the
    caller's signal handlers and re-raises, so the caller can clean up and exit (no hang, no abort)."""
    import ray
    from flwr.simulation import run_simulation  # imports Ray: about 1.8 CPU s that the local engine skips

    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in _SIGNALS} if main else {}
    stop, began, done = threading.Event(), threading.Event(), threading.Event()
    started = False
    hush = _HushAfterStop(stop)
    flwr_log = logging.getLogger("flwr")
    flwr_log.addFilter(hush)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = _init_ray(num_cpus, verbose, saved)
            _install_stopping_handlers(saved, stop)
            run_simulation(
                server_app=make_server_app(jobs, results, stop, began, done), client_app=client_app,
                num_supernodes=n_clients,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                "init_args": {"num_cpus": num_cpus, "include_dashboard": False,
                                              "log_to_driver": verbose}},
                verbose_logging=verbose)
    except BaseException:
        stop.set()  # the ServerApp thread raises SimulationStopped at its next grid call
        if began.is_set():
            done.wait(30.0)  # a job between grid calls (e.g. evaluating) finishes that step first
        raise
    finally:
        stop.set()
        if started and ray.is_initialized():
            ray.shutdown()  # Flower's backend shuts Ray down on a normal end; this covers an interrupt
        _restore_handlers(saved)
        flwr_log.removeFilter(hush)

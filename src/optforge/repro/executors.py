"""Executors run trials: ``local`` (one after another in this process), ``processes`` (a pool of
spawned worker processes on this machine, ``--workers N``) and ``ray`` (Ray tasks on a local or
existing Ray cluster; ``pip install 'optforge[ray]'``).

Two entry points, the same for all three:

* ``map(fn, items, on_start=, on_done=)`` runs ``fn`` on every item and returns the results in
  item order (the first exception is re-raised);
* ``run(fn, queue, on_start=, on_done=)`` asks ``queue.next_for(worker)`` for the next item each
  time a worker is free, so a scheduler can choose (longest first, keep a reproduction on the
  worker that already holds its cached models) with what it has learnt so far; results go to
  ``on_done`` as they finish.

``on_start(item, worker)`` is called when an item is handed to a worker (the ``ray`` executor
hands every item to worker 0 at submission), ``on_done(result)`` when its result is back, both in
the calling thread. The ``processes`` pool keeps its workers between calls (``close()`` or a
``with`` block ends them), ignores Ctrl-C in the workers (the caller handles it and terminates
them), and reports a worker that dies as an error of the item it was running.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from optforge._core import require

T = TypeVar("T")
R = TypeVar("R")


class TrialQueue(Protocol[T]):
    """What ``Executor.run`` pulls items from."""

    def next_for(self, worker: int) -> T | None:
        """The item ``worker`` runs next, or ``None`` when nothing is left."""
        ...

    def pending(self) -> int:
        """How many items are left."""
        ...


class Executor(Protocol):
    """Runs ``fn`` on items: ``map`` in item order, ``run`` pulling from a queue."""

    name: str
    workers: int

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]: ...

    def run(
        self,
        fn: Callable[[T], R],
        queue: TrialQueue[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
        on_error: Callable[[T, BaseException], Any] | None = None,
    ) -> None: ...

    def close(self) -> None: ...


class WorkerError(RuntimeError):
    """A trial raised in a worker process (or the worker died); the message names the cause."""


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class _ListQueue:
    """Items in their given order (what ``map`` runs)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)
        self.next_index = 0

    def next_for(self, worker: int) -> Any:
        if self.next_index >= len(self.items):
            return None
        self.next_index += 1
        return self.items[self.next_index - 1]

    def pending(self) -> int:
        return len(self.items) - self.next_index


def _call_indexed(job: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    """Run ``fn(item)`` for a ``(fn, index, item)`` job and keep the index (picklable)."""
    fn, index, item = job
    return index, fn(item)


def _map(
    executor: Executor,
    fn: Callable[[T], R],
    trials: Sequence[T],
    on_start: Callable[[T, int], Any] | None,
    on_done: Callable[[R], Any] | None,
) -> list[R]:
    """``map`` for every executor: ``run`` over ``(fn, index, item)`` jobs, results in order."""
    results: list[Any] = [None] * len(trials)

    def started(job: tuple[Any, int, T], worker: int) -> None:
        if on_start is not None:
            on_start(job[2], worker)

    def done(pair: tuple[int, R]) -> None:
        results[pair[0]] = pair[1]
        if on_done is not None:
            on_done(pair[1])

    jobs = [(fn, index, item) for index, item in enumerate(trials)]
    executor.run(_call_indexed, _ListQueue(jobs), on_start=started, on_done=done)
    return results


class LocalExecutor:
    """Runs trials one after another in this process (one torch thread pool, no pickling)."""

    name = "local"
    workers = 1

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]:
        return _map(self, fn, trials, on_start, on_done)

    def run(
        self,
        fn: Callable[[T], R],
        queue: TrialQueue[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
        on_error: Callable[[T, BaseException], Any] | None = None,
    ) -> None:
        while (item := queue.next_for(0)) is not None:
            if on_start is not None:
                on_start(item, 0)
            try:
                result = fn(item)
            except Exception as err:
                if on_error is None:
                    raise
                on_error(item, err)
                continue
            if on_done is not None:
                on_done(result)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker_main(index: int, inbox: Any, outbox: Any) -> None:
    """A pool worker: run ``(ticket, fn, item)`` tasks until ``None`` (or until the parent is
    gone: its end of the pipe closes); results go back pickled on this worker's own pipe.

    One pipe per worker, written synchronously: a worker that dies (a crash, an OOM kill,
    ``os._exit``) cannot leave a shared lock held. With one shared ``multiprocessing.Queue`` a
    worker killed while its feeder thread still held the queue's write lock blocked every other
    worker's results forever (the pool hung).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            task = inbox.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        ticket, fn, item = task
        try:
            message: tuple[Any, ...] = ("ok", index, ticket, fn(item))
        except BaseException as err:  # reported to the parent, the worker carries on
            message = ("error", index, ticket, err, traceback.format_exc())
        try:
            data = pickle.dumps(message)
        except Exception as err:  # an unpicklable result or exception
            text = f"{type(err).__name__}: {err}"
            data = pickle.dumps(("error", index, ticket, WorkerError(text), text))
        try:
            outbox.send_bytes(data)
        except (BrokenPipeError, OSError):  # the parent is gone
            return


class ProcessesExecutor:
    """Runs trials in ``workers`` spawned processes (CUDA-safe), kept between calls.

    ``workers`` defaults to the usable cores. Each trial sets its own torch thread count, so
    ``workers × threads`` should not exceed the cores. Items must be picklable and ``fn``
    importable (the runner's ``run_trial`` is). Workers start on first use, as many as there are
    items (up to ``workers``).
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers or usable_cores()
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, Any] = {}
        self._inboxes: dict[int, Any] = {}
        self._outboxes: dict[int, Any] = {}  # worker → the reading end of its result pipe

    def _start(self, index: int) -> None:
        if index in self._outboxes:  # a replaced worker's pipe
            self._outboxes.pop(index).close()
        inbox, sender = self._context.Pipe(duplex=False)  # the worker holds only the reader
        results, outbox = self._context.Pipe(duplex=False)  # ... and only this writer
        process = self._context.Process(
            target=_worker_main,
            args=(index, inbox, outbox),
            name=f"optforge-worker-{index}",
            daemon=True,
        )
        with _sigint_ignored():  # inherited through exec: Ctrl-C never reaches a worker
            process.start()
        inbox.close()
        outbox.close()  # the worker's copy is the only writer: its death is an EOF here
        self._processes[index], self._inboxes[index] = process, sender
        self._outboxes[index] = results

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]:
        return _map(self, fn, trials, on_start, on_done)

    def run(
        self,
        fn: Callable[[T], R],
        queue: TrialQueue[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
        on_error: Callable[[T, BaseException], Any] | None = None,
    ) -> None:
        busy: dict[int, tuple[int, Any]] = {}  # worker → (ticket, item)
        ticket = 0
        try:
            idle = []
            for index in range(min(self.workers, queue.pending())):
                if index not in self._processes or not self._processes[index].is_alive():
                    self._start(index)
                idle.append(index)
            while True:
                while idle:
                    item = queue.next_for(idle[0])
                    if item is None:
                        break
                    worker = idle.pop(0)
                    ticket += 1
                    self._inboxes[worker].send((ticket, fn, item))
                    busy[worker] = (ticket, item)
                    if on_start is not None:
                        on_start(item, worker)
                if not busy:
                    return
                readers = {self._outboxes[worker]: worker for worker in busy}
                ready = multiprocessing.connection.wait(list(readers), timeout=0.2)
                data = None
                for reader in ready:
                    try:
                        data = reader.recv_bytes()
                        break
                    except (EOFError, OSError):  # the worker died: no result will come
                        worker = readers[reader]
                        self._processes[worker].join(timeout=5)
                        data = None
                if data is None:
                    for worker, (_, item) in list(busy.items()):
                        process = self._processes[worker]
                        if process.is_alive():
                            continue
                        error = WorkerError(
                            f"worker process {worker} died (exit code {process.exitcode}) "
                            f"while running {item!r}"
                        )
                        if on_error is None:
                            raise error from None
                        del busy[worker]
                        self._start(worker)
                        idle.append(worker)
                        on_error(item, error)
                    continue
                kind, worker, done_ticket, payload, *rest = pickle.loads(data)
                if busy.get(worker, (None,))[0] != done_ticket:
                    continue  # not the task this worker runs now
                _, item = busy.pop(worker)
                idle.append(worker)
                if kind == "error":
                    error = _as_error(payload, rest[0] if rest else "")
                    if on_error is None:
                        raise error
                    on_error(item, error)
                elif on_done is not None:
                    on_done(payload)
        except BaseException:
            if busy:
                self.close(kill=True)  # busy workers hold work nobody will collect
            raise

    def close(self, kill: bool = False) -> None:
        """Stop the workers (at once with ``kill=True``); a later call starts new ones."""
        for index, process in self._processes.items():
            if kill:
                process.terminate()
            elif process.is_alive():
                try:
                    self._inboxes[index].send(None)
                except (OSError, ValueError):
                    process.terminate()
        for process in self._processes.values():
            process.join(timeout=5 if not kill else 2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)
        for sender in self._inboxes.values():
            sender.close()
        for reader in self._outboxes.values():
            reader.close()
        self._processes.clear()
        self._inboxes.clear()
        self._outboxes.clear()

    def __enter__(self) -> ProcessesExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._processes:
            with contextlib.suppress(Exception):
                self.close(kill=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this process for the duration (main thread only; a no-op elsewhere)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _as_error(exc: BaseException, text: str) -> BaseException:
    """The worker's exception, with the worker's traceback attached as its cause."""
    if isinstance(exc, BaseException) and not isinstance(exc, KeyboardInterrupt):
        exc.__cause__ = WorkerError(f"in the worker process:\n{text}") if text else None
        return exc
    return WorkerError(text or repr(exc))


class RayExecutor:
    """Runs every trial as a Ray task (one CPU each); results come back in trial order.

    Joins the Ray cluster already initialised in this process, else the one named by
    ``RAY_ADDRESS``, else starts a local one with ``workers`` CPUs (default: the usable cores)
    and shuts it down after each call. Items are submitted in the queue's order (Ray schedules
    them); ``on_start`` sees them at submission, as worker 0. Ray is imported on first use:
    ``ImportError`` names the ``ray`` extra.
    """

    name = "ray"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers or usable_cores()
        self._explicit_workers = workers
        self.ray = require("ray", "ray")

    def map(
        self,
        fn: Callable[[T], R],
        trials: Sequence[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
    ) -> list[R]:
        return _map(self, fn, trials, on_start, on_done)

    def run(
        self,
        fn: Callable[[T], R],
        queue: TrialQueue[T],
        *,
        on_start: Callable[[T, int], Any] | None = None,
        on_done: Callable[[R], Any] | None = None,
        on_error: Callable[[T, BaseException], Any] | None = None,
    ) -> None:
        ray = self.ray
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = self.workers
            ray.init(**kwargs)
            started = True
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(fn)
            items: dict[Any, Any] = {}
            while (item := queue.next_for(0)) is not None:
                items[remote.remote(item)] = item
                if on_start is not None:
                    on_start(item, 0)
            pending = list(items)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(done[0])
                except Exception as err:
                    if on_error is None:
                        raise
                    on_error(items[done[0]], err)
                    continue
                if on_done is not None:
                    on_done(result)
        finally:
            if started:
                ray.shutdown()

    def close(self) -> None:
        """Nothing held between calls."""


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "processes": ProcessesExecutor,
    "ray": RayExecutor,
}


def make_executor(
    name: str | None = None, workers: int | None = None, threads: int = 1
) -> Executor:
    """Build the executor called ``name``; ``ValueError`` lists the known ones, ``ImportError``
    names the extra of a backend that is not installed (Ray).

    ``name=None`` picks by ``workers`` (default: the usable cores divided by ``threads``):
    ``local`` for one worker, ``processes`` otherwise.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if name is None:
        workers = workers or max(1, usable_cores() // max(1, threads))
        name = "local" if workers == 1 else "processes"
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        if workers not in (None, 1):
            raise ValueError("--executor local runs one worker; drop --workers or pick processes")
        return LocalExecutor()
    if name == "processes" and workers is None:
        workers = max(1, usable_cores() // max(1, threads))
    return EXECUTORS[name](workers)

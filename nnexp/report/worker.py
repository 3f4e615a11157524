"""A report worker: a process that loads the report's libraries while a sweep trains, then builds its report.

Building a sweep's report (:func:`nnexp.report.build.build_report`) begins by importing what the sweep itself
never needs: matplotlib and seaborn with the report's theme, Optuna's importance evaluators, Jinja2, the data
generators the decision boundaries redraw their test points with (and MLflow, for a store that is not a SQLite
file). That is a second or more before the first figure, and in the sweep's own process it would come after the
last job, on the command's critical path. :class:`ReportWorker` starts a fresh interpreter when the sweep starts
(``python -c``: no copy of the sweep's store connections, threads or trainer state, and unlike
``multiprocessing``'s ``spawn`` it never runs the caller's script again). The worker imports all of that, draws
one throw-away figure (font cache, Agg) and renders the activation gallery of the activations the sweep was given
(:func:`nnexp.report.plots.prerender_gallery`) while the jobs train, then waits. At the end of the sweep
:meth:`ReportWorker.build` hands it the arguments of ``build_report`` (the runs frame the summary loaded
included: the report reads MLflow's runs, nothing of the trainer) and waits for the path of ``index.html`` or the
build's exception, raised here as if the build had run here. The figures are still drawn and rendered in
processes the worker forks (:class:`nnexp.report.plots.Renderer`).

The warm-up runs in a thread of the worker, one step (an import, a figure) at a time, each when half a core or
more has been idle for the last 0.1 s (or after 0.3 s of waiting), so it takes mostly what the jobs (and the metric
writer they wait for) leave idle. A build that comes before the warm-up is done stops it after its current step and does the rest
itself: the imports it needs first in its own process; Optuna's import and the gallery (drawn, or rendered if the
warm-up drew it) in the child processes that draw the importance section and the gallery alongside the rest.

Lifetime: the worker runs in its own process group, so a Ctrl-C at the terminal reaches the sweep's process only,
which decides (:func:`stop_worker` ends the worker; so does the sweep's process at exit). The worker ends itself
when its parent dies (it watches ``os.getppid()``), and on SIGTERM kills the renderers it forked and exits at once.
If it cannot start, or dies before answering, :func:`build` builds the report in the calling process instead: the
report is the same either way (``tests/test_report_worker.py``).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("nnexp")

__all__ = ["ReportWorker", "WorkerGone", "build", "start_worker", "current_worker", "stop_worker"]


class WorkerGone(RuntimeError):
    """The report worker died, or never answered: the caller builds the report itself."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in the worker, shown as the cause of the one raised here."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class ReportWorker:
    """The report's process; see the module docstring.

    Parameters
    ----------
    uri : str, optional
        The store the report will read: a server or database store is opened through MLflow during the warm-up
        (a SQLite file is read without MLflow).
    activations : list of str, optional
        The activations the sweep was given: their gallery is drawn and rendered during the warm-up, and used if
        the report's activations turn out the same (else drawn as usual).
    """

    def __init__(self, uri: str | None = None, activations: list[str] | None = None):
        import json
        import multiprocessing
        import subprocess

        self._conn, child = multiprocessing.Pipe()
        warm = {"uri": uri, "activations": sorted(activations) if activations else None}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from nnexp.report.worker import _main; _main()", str(child.fileno()),
                 str(os.getpid()), json.dumps(warm)],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, process_group=0)
        finally:
            child.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def build(self, poll: float = 0.2, **kwargs) -> Path:
        """Build the report in the worker: ``build_report(**kwargs)``; return the ``index.html`` it wrote.

        Log records of the build (``nnexp``'s warnings) are handled here, as if the build had run here.

        Raises
        ------
        WorkerGone
            If the worker is dead or dies before answering (nothing to wait for: build here instead).
        Exception
            The exception the build raised (a :class:`nnexp.report.ReportError`, say), its traceback in the worker
            attached as its ``__cause__``.
        """
        if not self.alive():
            raise WorkerGone(f"exit code {self.proc.returncode}")
        try:
            self._conn.send(("build", kwargs, os.getcwd()))
        except (OSError, ValueError) as e:  # a broken pipe: it died meanwhile
            raise WorkerGone(str(e)) from e
        while not self._conn.poll(poll):
            if not self.alive():
                raise WorkerGone(f"died while building (exit code {self.proc.returncode})")
        try:
            kind, value, records = self._conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerGone(f"died while building (exit code {self.proc.wait()})") from e
        for r in records:
            logging.getLogger(r["name"]).handle(logging.makeLogRecord(r))
        if kind == "ok":
            return Path(value)
        exc, tb = value
        raise exc from _RemoteTraceback(tb)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (waiting for a build it is doing would be pointless: the caller has given up on it)."""
        import subprocess

        if self.alive():
            self.proc.terminate()  # SIGTERM: it kills the renderers it forked, then exits
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._conn.close()


#: The worker started for the sweep in progress in this process, if any.
_WORKER: list[ReportWorker] = []
_WORKER_AT_EXIT: list[bool] = []


def start_worker(uri: str | None = None, activations: list[str] | None = None) -> ReportWorker | None:
    """Start this process's report worker (stopping an earlier one); None if it cannot start (the report is
    then built in this process)."""
    stop_worker()
    try:
        w = ReportWorker(uri, activations)
    except Exception as e:  # noqa: BLE001 - no worker is no failure: the report is built here
        log.warning("the report worker could not start (%s): the report will be built in this process", e)
        return None
    if not _WORKER_AT_EXIT:
        import atexit

        atexit.register(stop_worker)  # a sweep that ends without its callback (an error in Hydra) stops it too
        _WORKER_AT_EXIT.append(True)
    _WORKER.append(w)
    return w


def current_worker() -> ReportWorker | None:
    """The report worker :func:`start_worker` started, if it is still alive."""
    return _WORKER[0] if _WORKER and _WORKER[0].alive() else None


def stop_worker() -> None:
    """Stop the report worker of this process, if any."""
    while _WORKER:
        _WORKER.pop().close()


def build(worker: ReportWorker | None = None, **kwargs) -> Path:
    """``build_report(**kwargs)`` in ``worker`` when it is alive, else (or if it dies before answering) here.

    Returns the ``index.html`` written; raises what ``build_report`` raises.
    """
    if worker is not None:
        try:
            return worker.build(**kwargs)
        except WorkerGone as e:
            log.warning("the report worker stopped (%s): building the report in this process", e)
    from .build import build_report

    return build_report(**kwargs)


# -- the worker's side ---------------------------------------------------------------------------------------------

def _main() -> None:
    """The worker process: ``python -c "from nnexp.report.worker import _main; _main()" <fd> <parent pid> <warm>``,
    ``fd`` the inherited end of :class:`ReportWorker`'s pipe, ``warm`` the warm-up's JSON."""
    import json
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGTERM, _terminated)
    fd, parent_pid, warm = sys.argv[1:4]
    _serve(Connection(int(fd)), int(parent_pid), json.loads(warm))


def _serve(conn, parent_pid: int, warm: dict) -> None:
    """The worker's main loop: warm up in a low-priority thread; build each report asked for; stop on None, on
    SIGTERM, or when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep's process decides (a Ctrl-C sent to the group)
    signal.signal(signal.SIGTERM, _terminated)
    records: list[dict] = []
    handler = _Collect(records)
    logger = logging.getLogger("nnexp")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the caller shows them (no second copy from logging's last-resort handler)
    # the warm-up imports pandas, matplotlib, seaborn and MLflow: with the collector on, each allocation threshold
    # crossed would walk all their objects again (about 0.4 s of a core the jobs need); on again, with them frozen,
    # before a build
    gc.disable()
    stop_warming = threading.Event()
    warming = threading.Thread(target=_warm_up, args=(warm, stop_warming), name="nnexp-report-warm-up", daemon=True)
    warming.start()
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:  # the sweep's process died (kill -9): nobody will ask
                break
            continue
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        _, kwargs, cwd = msg
        stop_warming.set()  # what is left of the warm-up, the build does at normal priority
        warming.join()  # the step under way (matplotlib is not thread-safe)
        gc.freeze()  # the libraries' objects out of the collector's sight: each full collection is then short
        gc.enable()
        records.clear()
        try:
            os.chdir(cwd)
            from .build import build_report

            reply = ("ok", str(build_report(**kwargs)))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller, which reports it
            import pickle
            import traceback

            tb = traceback.format_exc()
            try:
                pickle.dumps(e)
            except Exception:  # noqa: BLE001 - an exception that cannot travel: its text does
                e = RuntimeError(f"{type(e).__name__}: {e}")
            reply = ("error", (e, tb))
        try:
            conn.send((*reply, [_record_dict(r) for r in records]))
        except (OSError, ValueError):
            break
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown (matplotlib, MLflow loaded): nothing is left to write


def _terminated(signum, frame) -> None:
    """SIGTERM: kill the figure renderers this worker forked, then exit (143, as a shell reports a SIGTERM)."""
    from . import plots

    plots.kill_renderers()
    os._exit(128 + signum)


class _Collect(logging.Handler):
    """Keeps the build's log records, sent back with its answer."""

    def __init__(self, records: list):
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record_dict(r: logging.LogRecord) -> dict:
    d = dict(r.__dict__)
    d["msg"], d["args"], d["exc_info"], d["exc_text"] = r.getMessage(), None, None, None
    if r.exc_info:
        d["msg"] += "\n" + logging.Formatter().formatException(r.exc_info)
    return d


def _warm_up(warm: dict, stop: threading.Event) -> None:
    """Import the report's stack, open the store, draw one figure, pre-render the gallery: each step when a core is
    idle (:func:`_idle_cores`), or after :data:`PATIENCE` seconds without one (a machine busy with other work: the
    step would cost the build as much later); none once ``stop`` is set (a build has come: it does the rest)."""
    import time

    for step in _warm_up_steps(warm):
        since = time.monotonic()
        while (not stop.is_set() and time.monotonic() - since < PATIENCE
               and _idle_cores(IDLE_PERIOD) < IDLE_CORES):
            pass
        if stop.is_set():
            return
        try:
            step()
        except Exception as e:  # noqa: BLE001 - a warm-up is an optimisation: the build imports what it needs
            log.debug("report worker warm-up: %s", e)
            return


#: A warm-up step starts when at least this many cores were idle over the last :data:`IDLE_PERIOD` seconds ...
IDLE_CORES = 0.5
IDLE_PERIOD = 0.1
#: ... or after this many seconds of waiting. Short: on a machine the jobs keep busy, each step of a 1 s patience
#: waited the whole second, and the sweep's build came before half the steps were done (it then does the rest on
#: the command's critical path).
PATIENCE = 0.3


def _idle_cores(period: float) -> float:
    """Idle cores of the machine over the next ``period`` seconds (Linux ``/proc/stat``; elsewhere: all of them).

    The warm-up waits for idle CPU instead of running at a lower priority: a thread that holds the GIL or an
    import lock at ``nice`` 19 on a loaded machine would stall the build that comes to wait for it.
    """
    import time

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guest time (counted in user)

    try:
        idle0, total0 = sample()
        time.sleep(period)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        time.sleep(period)
        return float(os.cpu_count() or 1)
    return (os.cpu_count() or 1) * (idle1 - idle0) / max(total1 - total0, 1)


def _warm_up_steps(warm: dict) -> list:
    """The warm-up, in steps of about half a second of CPU each, in the order a build needs them."""
    import importlib

    def imports(*names):
        return lambda: [importlib.import_module(n) for n in names]

    def theme():
        from .figures import set_theme

        set_theme()

    def template():
        from . import page

        page._environment().get_template(page.TEMPLATE)

    def figure():
        from . import plots

        plots.warm_up()

    def store():
        from .. import tracking

        tracking.client(warm["uri"]).search_experiments(max_results=1)  # MLflow imported, its store opened

    def gallery_drawn():
        from . import plots

        plots.predraw_gallery(warm["activations"])

    def gallery():
        from . import plots

        plots.prerender_gallery(warm["activations"])

    def both(*parts):
        return lambda: [part() for part in parts]

    steps = [imports("numpy", "pandas", "nnexp.report.load", "nnexp.report.stats"),
             both(imports("matplotlib", "seaborn"), theme),
             imports("nnexp.report.build", "nnexp.report.plots", "nnexp.report.sections", "nnexp.report.tables",
                     "nnexp.report.claims", "nnexp.data", "nnexp.model"),  # data, model: the decision boundaries
             both(figure, template), imports("optuna.importance", "nnexp.report.importance")]
    if warm.get("uri") and not warm["uri"].startswith("sqlite:"):  # a SQLite store is read without MLflow
        steps.append(store)
    if warm.get("activations"):  # drawn, then rendered: a build that comes between renders the figure drawn
        steps += [gallery_drawn, gallery]
    return steps

"""Command line: ``python -m nnexp [-m] [key=value ...]``, a thin Hydra entry point.

Before Hydra starts, :func:`preflight` composes the config of every job the
command would launch and validates it, so that a mistake (an unknown option, a
learning rate <= 0, zero epochs) ends the command with one line naming the key
and what it accepts, before any MLflow run exists. From the command line that check
runs in a forked child on the second core while the command imports MLflow
(:func:`_check_beside`): the two take about 1 s and 2 s on their own.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys


def _interrupted_at_start(signum, frame) -> None:
    """Ctrl-C while Python loads Hydra, NumPy and the configs (the first second of a command, before :func:`main`):
    nothing exists yet, so one line and the shell's status, not the traceback of whichever import was cut short."""
    os.write(2, b"nnexp: interrupted before any run started\n")
    os._exit(128 + signum)


if __name__ == "__main__":  # the command, not an import of this module (tests, nnexp.api)
    signal.signal(signal.SIGINT, _interrupted_at_start)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from .config import ConfigError, register  # noqa: E402
from .packing import register_plugin as register_packing_sweeper  # noqa: E402
from .search import register_plugin  # noqa: E402

register()
register_plugin()  # hydra/sweeper=nnexp_optuna (Hydra's own discovery misses plugins of an editable install)
register_packing_sweeper()  # hydra/sweeper=nnexp_basic, the default

log = logging.getLogger("nnexp")

#: Exit status: a job failed (or the report could not be written); the other runs are recorded.
EXIT_FAILED = 1
#: Exit status: bad input (one line ``nnexp: error: ...``); nothing ran.
EXIT_BAD_INPUT = 2
#: Exit status: the sweep ran but no run finished (every run diverged): its summary and report say so.
EXIT_NO_RESULT = 3

#: Hydra's own flags after which no job runs (help, printing the config, ...).
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--version", "--shell-completion", "-sc")


#: errno values that mean "this folder cannot be written": a user's situation, not a program error.
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def _os_error_line(e: OSError) -> str:
    where = e.filename or "the launch folder"
    return f"cannot write {where}: {e.strerror}; run from a folder you can write to (outputs, mlflow.db and reports go there)"


@hydra.main(version_base="1.3", config_path="pkg://nnexp.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """Hydra's task function: one job."""
    from .app import run_job

    return run_job(cfg)


def main(argv: list[str] | None = None) -> int:
    """Validate every job of the command, then run it under Hydra; return the exit code.

    0: done; 1 (:data:`EXIT_FAILED`): a job failed or the report could not be written; 2
    (:data:`EXIT_BAD_INPUT`): bad input, nothing ran; 3 (:data:`EXIT_NO_RESULT`): a sweep in which no
    run finished (every run diverged); 130: interrupted.

    With ``argv`` None (the process's own command line) the jobs are checked in a child process while this one
    imports MLflow (:func:`_check_beside`), and the command's objects are left out of the interpreter's final
    garbage collection (see :func:`_spare_final_collection`).
    """
    if signal.getsignal(signal.SIGINT) is _interrupted_at_start:  # from here on, Ctrl-C is handled as a command's
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if argv is None:
        import gc

        # Start-up allocates the objects of Hydra, MLflow, SQLAlchemy and pandas (about 470,000), and each
        # allocation threshold crossed walked them all again: 0.4 s of full collections before the first job, for
        # import-time objects that form no garbage. Collection resumes, with them frozen, once they are loaded.
        gc.disable()
        code = _main(sys.argv[1:], beside=True)
        _spare_final_collection()
        return code
    return _main(list(argv))


#: Hydra's options that take a value (``--config-dir DIR`` or ``--config-dir=DIR``).
_VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--experimental-rerun")


def _flags_first(argv: list[str]) -> list[str]:
    """``argv`` with Hydra's value options moved before the overrides, keeping each order.

    Hydra's argument parser takes the overrides as one positional list, so overrides on both sides of
    ``--config-dir DIR`` were refused ("unrecognized arguments"); written anywhere, they now mean the same.
    """
    flags: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_FLAGS and i + 1 < len(argv):
            flags += argv[i:i + 2]
            i += 2
            continue
        (flags if "=" in a and a.split("=", 1)[0] in _VALUE_FLAGS else rest).append(a)
        i += 1
    return flags + rest


def _modes_line(argv: list[str]) -> str | None:
    """One line when ``argv`` asks Hydra for more than one of its modes (``-m --cfg job``), which Hydra refuses with
    a traceback; else None."""
    from .preflight import _parse

    try:
        args = _parse(argv)
    except SystemExit:  # argparse's own message for an unknown flag: Hydra prints it as usual
        return None
    modes = [flag for flag, on in (("--run", args.run), ("-m/--multirun", args.multirun), ("--cfg", args.cfg),
                                   ("--info", args.info), ("--shell-completion", args.shell_completion)) if on]
    if len(modes) < 2:
        return None
    hint = "; to see the config of one job of a sweep, drop -m" if "--cfg" in modes and "-m/--multirun" in modes else ""
    return f"{' and '.join(modes)} cannot be used together: Hydra takes one of them per command{hint}"


def _main(argv: list[str], beside: bool = False) -> int:
    """:func:`main`; with ``beside``, the command's jobs are checked in a child process (:func:`_check_beside`)."""
    argv = _flags_first(argv)
    if (line := _modes_line(argv)) is not None:
        print(f"nnexp: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if not any(a.split("=")[0] in _INFO_FLAGS for a in argv):
            error = _check_beside(argv) if beside else _check(argv)
            if error is not None:
                print(f"nnexp: error: {error}", file=sys.stderr)
                return EXIT_BAD_INPUT
        from .callbacks import LAST_SWEEP, abort_sweep

        from .tracking import StoreUnavailable
        if beside:
            import gc

            gc.freeze()  # the libraries loaded so far stay out of every later collection (see main)
            gc.enable()
    except KeyboardInterrupt:  # Ctrl-C while the jobs are checked and MLflow loads: no run or store exists yet
        print("nnexp: interrupted before any run started", file=sys.stderr)
        return 128 + signal.SIGINT

    LAST_SWEEP.clear()
    if "nnexp.app" in sys.modules:  # an earlier command in this process (tests, a notebook) created runs
        sys.modules["nnexp.app"].STARTED_RUNS.clear()
    sys.argv = [sys.argv[0], *argv]
    # Let errors reach this function instead of Hydra's own report (a trimmed traceback and exit 1), so that a
    # user's mistake or an unreachable store ends with one line; a program error still shows its traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    interrupted = _watch_interrupts()
    try:
        hydra_main()
    except ConfigError as e:  # raised by a job in a single run
        print(f"nnexp: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a job's output folder cannot be made: the sweep cannot go on
        _abort_sweep_quietly(abort_sweep)
        if e.errno in _UNWRITABLE:
            print(f"nnexp: error: {_os_error_line(e)}", file=sys.stderr)
            return 2
        print(f"nnexp: error: {e}; the sweep stopped, its runs so far are kept", file=sys.stderr)
        return 1
    except StoreUnavailable as e:
        _abort_sweep_quietly(abort_sweep)
        print(f"nnexp: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the interrupted job marked its own run KILLED; mark the sweep's parent too
        abort_sweep("KILLED")
        print(_interrupted_line(LAST_SWEEP), file=sys.stderr)
        return _interrupt_status(interrupted)
    except Exception:  # a program error: its traceback follows, but no parent run is left RUNNING
        if interrupted:  # Ctrl-C landed inside a library (Hydra's sweeper, OmegaConf) and surfaced as another error
            _abort_sweep_quietly(abort_sweep, "KILLED")
            print(_interrupted_line(LAST_SWEEP), file=sys.stderr)
            return _interrupt_status(interrupted)
        _abort_sweep_quietly(abort_sweep)
        raise
    finally:
        _unwatch_interrupts()

    if LAST_SWEEP.get("store_error"):  # runs the metric writer was given could not be recorded
        _abort_sweep_quietly(abort_sweep)
        print(f"nnexp: error: {LAST_SWEEP['store_error']}", file=sys.stderr)
        return EXIT_FAILED
    if LAST_SWEEP.get("failed") or LAST_SWEEP.get("report_error") or LAST_SWEEP.get("register_error"):
        return EXIT_FAILED
    return EXIT_NO_RESULT if LAST_SWEEP.get("no_result") else 0


def _check(argv: list[str]) -> str | None:
    """Compose and validate every job of ``argv`` (:func:`nnexp.preflight.preflight`); return the error line, or None."""
    import gc

    from .preflight import preflight

    gc.enable()  # composing thousands of jobs makes cyclic garbage (OmegaConf's nodes point to their parents)

    try:
        preflight(argv)
    except ConfigError as e:
        return str(e)
    except OSError as e:
        if e.errno not in _UNWRITABLE:
            raise
        return _os_error_line(e)
    return None


def _check_beside(argv: list[str]) -> str | None:
    """:func:`_check` in a forked child, while this process imports what the command needs next; the same result.

    Checking every job of a sweep (about 1 s for 27 jobs) and importing MLflow and its store (about 2 s,
    :func:`nnexp.tracking.preload`) are independent until the store is made, so on a machine with a second core
    they overlap: the child composes and validates, this process imports, and nothing is created before the
    child's verdict (an error is still one line and no store). A child that ends without a verdict (a program
    error, a signal) makes this process check again itself, so that a traceback is its own. Without ``os.fork``,
    with one core or with threads running (a fork copies none of them) the check runs here first, as before.
    """
    import threading

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not hasattr(os, "fork") or cores < 2 or threading.active_count() > 1:
        return _check(argv)
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    # Ctrl-C reaches the whole process group: this process answers it; the child ignores it (it is killed below),
    # so that it prints nothing, not even from the fork's own hooks (random's re-seeding) the signal may land in.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except OSError:  # no process to spare: check here
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        os.close(read)
        os.close(write)
        return _check(argv)
    if pid == 0:  # the child: report a verdict through the pipe and never return into the command
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            os.close(read)
            error = _check(argv)
            os.write(write, b"K" if error is None else b"E" + error.encode())
            code = 0
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    verdict = None
    try:
        os.close(write)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C pending since the fork lands here
        from . import app, callbacks  # noqa: F401 - the jobs' and the sweep's modules
        from .tracking import preload

        preload(server=_names_server(argv))
        with os.fdopen(read, "rb") as pipe:
            verdict = pipe.read()
    finally:
        if verdict is None:  # interrupted here: the child's verdict no longer matters
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if verdict == b"K":
        from .preflight import CHECKED
        from .studies import config_dir_overrides

        CHECKED.append(config_dir_overrides(argv))  # as preflight() records it
        return None
    if verdict.startswith(b"E"):
        return verdict[1:].decode()
    return _check(argv)


def _names_server(argv: list[str]) -> bool:
    """Whether the command's store is a tracking server, as far as the command line and environment say."""
    uri = next((a.split("=", 1)[1] for a in reversed(argv) if a.lstrip("+").startswith("tracking.uri=")), None)
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.startswith(("http://", "https://"))


_INTERRUPTS: list[int] = []


def _note_interrupt(signum, frame) -> None:
    """Python's own SIGINT handler (raise KeyboardInterrupt), remembering that the user interrupted; SIGTERM (sent
    by ``timeout``, ``kill``, SLURM, ``docker stop``) is handled the same way, so no run is left RUNNING."""
    _INTERRUPTS.append(signum)
    # as Python's handler does, with what stopped the command said (the runs' nnexp.error names it)
    raise KeyboardInterrupt("Ctrl-C (SIGINT)" if signum == signal.SIGINT else f"{signal.Signals(signum).name}")


def _interrupted_line(sweep: dict) -> str:
    """What an interrupted command tells the user: which runs were marked, or, when every run had been recorded
    and the report was being written, that only the report is missing and how to write it."""
    from .callbacks import report_command

    if sweep.get("report_interrupted"):
        return (f"nnexp: interrupted while writing the report; every run of the sweep is recorded "
                f"(the parent run is FINISHED). Write the report with: {report_command(sweep)}")
    if sweep.get("ended") == "FINISHED":  # after the runs were counted, before the report began
        return (f"nnexp: interrupted after every run of the sweep was recorded (the parent run is FINISHED); "
                f"no report was written. Write it with: {report_command(sweep)}")
    from .app import STARTED_RUNS

    if not sweep.get("parent_id") and not STARTED_RUNS:  # Ctrl-C before any run (or store) was created
        return "nnexp: interrupted before any run started; nothing was recorded"
    return "nnexp: interrupted; runs in progress are marked KILLED"


def _interrupt_status(interrupts: list[int]) -> int:
    """The shell's status for a command ended by a signal: 128 + its number (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + (interrupts[-1] if interrupts else signal.SIGINT)


def _watch_interrupts() -> list[int]:
    """Remember Ctrl-C for this command (where Python's default handler is in place); return the record.

    An interrupt that lands inside a library's bookkeeping can surface as another exception (Hydra's sweeper
    has raised ``AttributeError`` from OmegaConf's half-updated state): with the record, it still ends as an
    interrupt, exit 130, not as a program error.
    """
    _INTERRUPTS.clear()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_interrupt)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _note_interrupt)
    return _INTERRUPTS


def _unwatch_interrupts() -> None:
    """Give SIGINT and SIGTERM back their default handlers where :func:`_watch_interrupts` set its own."""
    if signal.getsignal(signal.SIGINT) is _note_interrupt:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is _note_interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _abort_sweep_quietly(abort_sweep, status: str = "FAILED") -> None:
    """Mark the running sweep's parent and unfinished children ``status``, if the store still answers."""
    try:
        abort_sweep(status)
    except Exception:  # the store that failed cannot record it; the next sweep marks the orphans
        pass


def _spare_final_collection() -> None:
    """Let the process exit without walking every object once more (about 0.5 s once MLflow and Hydra are loaded).

    At exit the interpreter runs a last garbage collection over everything the
    loaded libraries hold. By the time a command returns, its work is on disk:
    runs ended, the store committed, files closed, and the handlers that still
    matter (logging's flush, MLflow's) run from ``atexit`` as before. The
    garbage there is now is collected first, so what it holds is released
    normally; ``gc.freeze()`` then moves the rest out of the collector's view, and
    the operating system reclaims it with the process.
    """
    import gc

    sys.stdout.flush()
    sys.stderr.flush()
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())

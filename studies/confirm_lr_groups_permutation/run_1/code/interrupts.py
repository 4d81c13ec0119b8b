"""
interrupts.py: Ctrl-C and `kill PID` during a run. A signal sets a flag and raises
KeyboardInterrupt (SIGINT) or Terminated (SIGTERM); stop_if_asked() raises it again at the next
check, so a stop is never lost while torch.compile runs Python where exceptions are dropped.
"""
import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`), handled as Ctrl-C: the worker pool is terminated, finished units kept."""


_stop_signal = None  # SIGINT or SIGTERM, once one has asked this process to stop


def _on_signal(signum, frame):
    """Ctrl-C and `kill PID` stop the run: raised here, and again at the next check (stop_if_asked),
    because torch.compile runs Python in weakref callbacks, where CPython prints and drops an
    exception raised by a signal handler (a Ctrl-C during compiling would otherwise be lost)."""
    global _stop_signal
    _stop_signal = signum
    stop_if_asked()


def stop_if_asked():
    if _stop_signal is not None:
        raise Terminated if _stop_signal == signal.SIGTERM else KeyboardInterrupt


def catch_stop_signals():
    """Ctrl-C and `kill PID` raise KeyboardInterrupt / Terminated, never lost while torch.compile
    compiles (_on_signal); only the main thread can install handlers."""
    if threading_main():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)


def threading_main():
    import threading
    return threading.current_thread() is threading.main_thread()

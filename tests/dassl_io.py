"""Running Dassl's train.py in the test process without losing the real stdout."""
import contextlib
import io
import sys


@contextlib.contextmanager
def dassl_stdout():
    """Undo Dassl's ``setup_logger``, which swaps ``sys.stdout`` for a tee whose ``close()`` (also run
    on garbage collection) would close the real stdout."""
    saved = sys.stdout
    try:
        yield
    finally:
        tee, sys.stdout = sys.stdout, saved
        if tee is not saved and hasattr(tee, "console"):
            if tee.file is not None:
                tee.file.close()
            tee.file, tee.console = None, io.StringIO()

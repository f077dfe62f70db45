"""How every command line (the `mellama-*` console scripts, mellama_jax/commands/) meets its user.

* A user mistake — a missing or wrong path, a mistyped or badly typed `--config.x` override, a bad value,
  bad data — is answered with one `error:` line naming the thing and what was expected, exit status 2, no
  traceback (`--debug` shows it). The project's own errors (ConfigError, DataError, CheckpointError,
  RecordError, …) are ValueErrors whose messages already name the file, field or flag; file-system errors
  are OSErrors.
* Ctrl-C stops the command: exit status 130 and one line. Outputs are written into temporary directories
  renamed into place at the end (checkpoints.fileio.atomic_output_dir), so nothing half-written is left looking
  complete.
* Third-party libraries that narrate (absl/orbax at INFO, TFDS) are quieted.

* `--help` (or `-h`) prints what the command does and its flags, exit status 0.

Every command module in mellama_jax/commands/ has the same shape (the console script calls `main()`):

    def main(argv=None) -> int:
        return cli.run(_main, argv)                    # argparse commands (parser = cli.ArgumentParser(...))
        return cli.run(_main, argv, absl_flags=True)   # config-file commands: --config FILE --config.x=y
    if __name__ == "__main__":
        sys.exit(main())
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from typing import Callable, Sequence

from absl import flags
from absl import logging as absl_logging

from mellama_jax import paths

DEBUG_FLAG = "--debug"
HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# Exceptions that mean "the input was wrong", not "the program is wrong".
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


class UsageError(ValueError):
    """A command-line mistake found by the command itself (the message names the flag)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house style: `--debug`, and a bad flag is one `error:` line plus where help is."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show tracebacks of errors")

    def error(self, message: str):
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USER_ERROR)


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """The multi-process flags of training (launch/local.py appends them to every process's command); on a
    Cloud TPU pod or under SLURM none is needed (jax.distributed detects the cluster)."""
    group = parser.add_argument_group("multi-process (as in training)")
    group.add_argument("--coordinator", default=None, help="host:port of process 0 (explicit multi-process runs)")
    group.add_argument("--num_processes", type=int, default=None, help="number of processes (with --coordinator)")
    group.add_argument("--process_id", type=int, default=None, help="this process's index (with --coordinator)")
    group.add_argument("--local_device_count", type=int, default=None,
                       help="CPU devices of this process (local multi-process rehearsal)")


def quiet_third_party_logs() -> None:
    """absl (orbax, TFDS) logs every file it touches at INFO and harmless conditions at WARNING (orbax: "is read
    only, save will be skipped" on every checkpoint it opens for reading)."""
    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def one_line(e: BaseException) -> str:
    """The message of `e` as printed to a user: its text (KeyError's unquoted), first two lines at most."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {e.strerror or text}"
    lines = [line for line in text.strip().splitlines() if line.strip()] or [type(e).__name__]
    return "\n".join(lines[:2])


def local_config_files(argv: Sequence[str]) -> list[str]:
    """`--config gs://.../config.py` (e.g. a recipe stage's config in a bucket workdir): ml_collections executes
    config files from local disk, so a remote one is downloaded to a temporary file first (removed at exit)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            j, value = i + 1, out[i + 1]
        elif arg.startswith("--config="):
            j, value = i, arg.split("=", 1)[1]
        else:
            continue
        if not paths.is_remote(value):
            continue
        fd, local = tempfile.mkstemp(prefix="mellama-config-", suffix=".py")
        atexit.register(lambda p=local: os.path.exists(p) and os.remove(p))
        with os.fdopen(fd, "w") as f:
            f.write(paths.resolve(value).read_text())
        out[j] = local if j == i + 1 else f"--config={local}"
    return out


def parse_absl_flags(argv: Sequence[str], define_flags: Callable[[], None] | None = None) -> list[str]:
    """Parse absl / ml_collections flags; a bad flag or config override becomes UsageError naming it.

    define_flags: defines flags whose definition already reads the command line (a config-file flag with a
    default file applies the --config.* overrides when it is defined).
    """
    FLAGS = flags.FLAGS
    argv = local_config_files(argv)
    try:
        if define_flags is not None:
            define_flags()
        rest = FLAGS(list(argv))
    except flags.Error as e:
        raise UsageError(str(e)) from e
    except (AttributeError, KeyError) as e:  # ml_collections: an override names a field the config lacks
        # The message is a KeyError's repr inside an AttributeError: "\\'stpes\\'\\nDid you mean ..."
        text = str(e.args[0] if e.args else e).replace("\\n", "\n").replace("\\'", "'").strip("'\" ")
        key, _, hint = text.partition("\n")
        key = key.strip("'\" ")
        named = [a.split("=")[0] for a in argv if a.startswith("--") and re.search(rf"\.{re.escape(key)}(=|$)", a)]
        raise UsageError(f"{named[0] if named else key}: no such config field"
                         + (f"; {hint.strip()}" if hint.strip() else "")) from e
    for name in list(FLAGS):
        flag = FLAGS[name]
        if hasattr(flag, "config_filename") and flag.present:  # an ml_collections config-file flag
            try:
                flag.value.keys()  # a config file that failed to load raises here, not while parsing
            except OSError as e:
                detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
                raise UsageError(f"--{name}={flag.config_filename}: cannot load the config file: {detail}") from e
    return rest


def absl_help(main: Callable) -> str:
    """`--help` of an absl command: the docstring of the module defining `main`, then that module's flags
    (absl's own help flag would list every library's flags and exit with status 1)."""
    module = sys.modules.get(main.__module__)
    doc = (module.__doc__ or "").strip() if module else ""
    FLAGS = flags.FLAGS
    # absl files the flags of a module run as a script under sys.argv[0] instead of its name.
    own = [name for name in FLAGS.flags_by_module_dict() if name in (main.__module__, sys.argv[0])]
    flag_help = "\n".join(FLAGS.module_help(name) for name in own)
    return (f"{doc}\n\n" if doc else "") + flag_help + (
        "\n\nAny field of the config file is set with --config.<field>=<value> (e.g. --config.train.steps=100)."
        if "--config" in flag_help else "") + "\n"


# Modules whose functions run as weakref callbacks (WeakKeyDictionary.remove, WeakSet._remove, finalize):
# an exception raised there is printed as "Exception ignored" too, and a collection triggers them.
_WEAKREF_FILES = (os.path.join("", "weakref.py"), os.path.join("", "_weakrefset.py"))


def _swallows_exceptions(frame) -> bool:
    """Is `frame` (or a caller) a garbage-collector callback, a weakref callback or a __del__, where Python
    prints an exception as "Exception ignored" and carries on? JAX runs one on every collection."""
    callbacks = {cb.__code__ for cb in gc.callbacks if hasattr(cb, "__code__")}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name == "__del__" or code.co_filename.endswith(_WEAKREF_FILES):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum, frame):
    if _swallows_exceptions(frame):
        # Raised here, Ctrl-C would be printed and ignored (a conversion would run to the end): ask again
        # in a moment, when the main thread is back in ordinary code.
        threading.Timer(0.05, signal.raise_signal, (signum,)).start()
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_stops():
    """Ctrl-C raises KeyboardInterrupt in the main program, never inside a callback that would swallow it."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # ignored, or the user's own
        yield
        return
    signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None, *, absl_flags: bool = False,
        define_flags: Callable[[], None] | None = None, user_errors: tuple[type[BaseException], ...] = (),
        on_interrupt: str = "") -> int:
    """Run `main(argv)` and turn user mistakes and Ctrl-C into one line and an exit status.

    absl_flags: parse absl flags first and pass main the remaining argv (program name first, as absl does);
        define_flags is called first (see parse_absl_flags).
    user_errors: more exception types that are the user's mistake (besides ValueError and OSError).
    on_interrupt: what to tell the user after Ctrl-C (e.g. how to resume).
    """
    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    if absl_flags and any(a in HELP_FLAGS for a in argv[1:]):
        if define_flags is not None:
            define_flags()
        sys.stdout.write(absl_help(main))
        return 0
    debug = DEBUG_FLAG in argv
    if absl_flags and debug:
        argv.remove(DEBUG_FLAG)
    try:
        with ctrl_c_stops():
            if absl_flags:
                argv = parse_absl_flags(argv, define_flags)
                quiet_third_party_logs()
                return main(argv)
            return main(argv[1:])
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stderr.write("\ninterrupted" + (f": {on_interrupt}" if on_interrupt else "") + "\n")
        return EXIT_INTERRUPTED
    except USER_ERRORS + tuple(user_errors) as e:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {one_line(e)}\n")
        return EXIT_USER_ERROR

"""Loads one hostile file in a process of its own and reports on stdout
(JSON) what happened: the exception class and message, or what loading
returned. Run by tests/test_hostile_files.py, one process per file, so a
crash, a hang or a memory blow-up is caught from outside.

argv[1] is a JSON object: ``path`` (str, or a list of str that is joined
into one argument), ``kwargs`` for ``fastlstm.load``, ``predict`` (an input
shape to run once after loading, or null), ``secret`` (bytes of another
file, hex, that may appear in no result), ``source`` ("path", or "bytes" /
"fileobj": the file's bytes, or the open file, are what load() gets).
"""

from __future__ import annotations

import json
import os
import resource
import sys

# A safety net, not the measurement: the parent asserts on peak RSS. Without
# it a broken loader could take the whole machine with it.
if "san" not in os.environ.get("LD_PRELOAD", ""):  # ASan needs the space
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def _arrays(obj, out, depth=0):
    import numpy as np

    if depth > 20:
        return
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _arrays(v, out, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _arrays(v, out, depth + 1)
    elif hasattr(obj, "__dict__"):
        _arrays(vars(obj), out, depth + 1)


def main() -> None:
    args = json.loads(sys.argv[1])
    secret = bytes.fromhex(args["secret"])
    import numpy as np

    import fastlstm

    report = {}
    try:
        source = args.get("source", "path")
        what = args["path"]
        if source == "bytes":
            with open(what, "rb") as fh:
                what = fh.read()
        elif source == "fileobj":
            what = open(what, "rb")  # noqa: SIM115 - load() reads it to the end
        model = fastlstm.load(what, **args["kwargs"])
        report["loaded"] = type(model).__name__
        found = []
        _arrays(model, found)
        if args.get("predict"):
            x = np.zeros(args["predict"], np.float32)
            found.append(np.asarray(model.predict(x)))
            report["predicted"] = True
        report["leak"] = any(secret in np.ascontiguousarray(a).tobytes() for a in found)
    except BaseException as exc:  # noqa: B036 - the report is the point
        report["error"] = type(exc).__name__
        report["fastlstm_error"] = isinstance(exc, fastlstm.FastLSTMError)
        report["message"] = str(exc)[:2000]
        report["leak"] = secret.decode("latin1") in str(exc)
    report["peak_rss"] = _peak_rss()
    print(json.dumps(report))


def _peak_rss() -> int | None:
    """This process's own peak RSS in bytes (VmHWM of its memory since
    exec): unlike wait4's ru_maxrss, it leaves out the parent's memory,
    which a forked child counts until it execs."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()

"""HTTP benchmark: a tenant-scoped list of 20 rows through `socialflow api`, loaded by wrk.

    python bench/http.py [--json] [--processes 1,2] [--duration 20] [--connections 32] [--rounds 3]

The benchmark itself is bench/_http_bench.py (what it measures and checks: its docstring). This
file only runs it, under the name the issue gave it. A file named `http.py` in bench/ would
shadow the standard library's `http` package for every script here (a script's directory comes
first on sys.path), so when a script imports `http` and finds this file, the file hands the
standard library's package over in its place.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]
    from _http_bench import main

    main()
else:  # imported as `http` by a script in bench/: become the standard library's package
    import importlib

    del sys.modules[__name__]
    _path = sys.path[:]
    sys.path[:] = [p for p in _path if os.path.abspath(p or os.curdir) != _HERE]
    try:
        sys.modules[__name__] = importlib.import_module(__name__)
    finally:
        sys.path[:] = _path

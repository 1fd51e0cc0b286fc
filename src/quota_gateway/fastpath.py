"""Per-request pure functions: the compiled `_fastpath` when available, else the Python twin.

Set QG_NO_EXTENSIONS=1 to force the pure-Python implementation.
"""

from __future__ import annotations

import os

NO_EXTENSIONS = bool(os.environ.get("QG_NO_EXTENSIONS"))

if not NO_EXTENSIONS:
    try:
        from . import _fastpath as _impl  # type: ignore[attr-defined]
    except ImportError:  # no compiler at install time: the twin serves
        from . import _fastpath_py as _impl
else:
    from . import _fastpath_py as _impl

COMPILED = _impl.__name__.endswith("._fastpath")

parse_authorization = _impl.parse_authorization
parse_access_token = _impl.parse_access_token

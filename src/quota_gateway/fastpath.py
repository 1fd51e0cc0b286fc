"""Per-request pure functions: the compiled `_fastpath` when available, else the Python twin.

Set QG_NO_EXTENSIONS=1 to force the pure-Python implementation.
"""

from __future__ import annotations

import os

NO_EXTENSIONS = bool(os.environ.get("QG_NO_EXTENSIONS"))

if not NO_EXTENSIONS:
    try:
        from . import _fastpath as _impl
    except ImportError:  # no compiler at install time: the twin serves
        from . import _fastpath_py as _impl  # type: ignore[no-redef]
else:
    from . import _fastpath_py as _impl  # type: ignore[no-redef]

COMPILED = _impl.__name__.endswith("._fastpath")

API_KEY_PREFIX = _impl.API_KEY_PREFIX
BUCKETS = _impl.BUCKETS
PERIODS = _impl.PERIODS
WINDOW_NAMES = _impl.WINDOW_NAMES
DENIAL_MESSAGES = _impl.DENIAL_MESSAGES
parse_authorization = _impl.parse_authorization
parse_access_token = _impl.parse_access_token
generate_api_key = _impl.generate_api_key
normalize_api_key = _impl.normalize_api_key
api_key_bucket = _impl.api_key_bucket
check_rule_feature = _impl.check_rule_feature
compile_rules = _impl.compile_rules
window_bounds = _impl.window_bounds
render_validation = _impl.render_validation
limit_headers = _impl.limit_headers
normalize_imported_key = _impl.normalize_imported_key
IMPORTED_MIN_LEN = _impl.IMPORTED_MIN_LEN
IMPORTED_MAX_LEN = _impl.IMPORTED_MAX_LEN

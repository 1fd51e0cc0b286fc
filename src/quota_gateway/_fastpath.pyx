# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled hot-path functions. Twin: _fastpath_py.py (same names, same results)."""

cdef str _TOKEN_SCHEME = "ExisOneApi "
cdef Py_ssize_t _PUBLIC_LEN = 12
cdef Py_ssize_t _SECRET_LEN = 32
cdef Py_ssize_t _TOKEN_LEN = 7 + 12 + 1 + 32


cdef inline bint _alnum(Py_UCS4 c):
    return (c >= u'0' and c <= u'9') or (c >= u'a' and c <= u'z') or (c >= u'A' and c <= u'Z')


cpdef object parse_access_token(str token):
    """`exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    cdef Py_ssize_t i
    if len(token) != _TOKEN_LEN or not token.startswith("exo_at_"):
        return None
    if token[7 + _PUBLIC_LEN] != u'_':
        return None
    for i in range(7, 7 + _PUBLIC_LEN):
        if not _alnum(token[i]):
            return None
    for i in range(8 + _PUBLIC_LEN, _TOKEN_LEN):
        if not _alnum(token[i]):
            return None
    return token[7:7 + _PUBLIC_LEN], token[8 + _PUBLIC_LEN:]


cpdef object parse_authorization(object header):
    """`ExisOneApi exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    if header is None or not isinstance(header, str) or not (<str>header).startswith(_TOKEN_SCHEME):
        return None
    return parse_access_token((<str>header)[11:].strip())

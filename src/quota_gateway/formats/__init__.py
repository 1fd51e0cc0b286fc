"""Formats shared by several domains, one module each: key alphabets and check characters,
digests, the access-token format, time parsing, Redis key prefixes, URLs given to call or link. Pure functions and
constants; nothing here does I/O or imports a domain."""

"""Abuse resistance for every surface: client addresses behind trusted proxies, per-address
limits on unauthenticated routes (Redis windows), a negative cache for failed lookups, counts of
authenticated failed lookups (with an optional per-token limit), and bounded request heads.

A core package: domains import it (to note a failed lookup, or to consult the negative cache);
it imports no domain."""

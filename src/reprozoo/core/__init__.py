"""The spine shared by every method: registry, results, reports, metrics, checks, seeding, I/O.

``core`` imports no method package.
"""

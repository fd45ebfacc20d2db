"""Load-and-fault suite for flask-sessionscope.

``python -m stress.run --short`` serves :mod:`stress.app` from gunicorn
against a throw-away PostgreSQL database, drives it with concurrent clients
while injecting faults, then checks that every acknowledged write is stored
exactly once, every refused one is absent, and nothing leaked. See
``docs/reliability.md``.
"""

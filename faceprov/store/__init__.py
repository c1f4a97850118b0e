"""The faceprov store: cloak records, identity registry, verifications, audit chain.

Open one with `faceprov.store.repo.open_repo(url)`; the URL alone picks SQLite (default) or
PostgreSQL + pgvector.
"""

"""A tiny Django project for the ``django_tasks`` backend's tests, which run it in subprocesses.

Its settings come from environment variables (see ``settings.py``), so each test picks the task backend (the
immediate one, or the database one with a real ``db_worker``), the database (SQLite or PostgreSQL) and where the
worker delivers (the test's emulator), without touching the settings of the process that runs pytest.
"""

"""The distributed delivery backends (Celery, RQ) against real Redis and real worker processes."""

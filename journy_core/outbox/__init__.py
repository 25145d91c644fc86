"""The ``outbox`` backend: operations written to a table of the app's own database in the transaction of the change
they describe, and delivered by a relay (in the app's processes, or ``manage.py journy_relay`` /
``flask journy relay``). If the transaction commits, the call will be made, even if the process dies on the next
line; if it rolls back, the call never existed.

- :mod:`journy_core.outbox.store`: the row and the small storage interface each database layer implements (the
  Django ORM store in ``journy_django.outbox``, the SQLAlchemy store in :mod:`journy_core.outbox.sqlalchemy`
  with its table in :mod:`journy_core.outbox.sqlalchemy_table`, and :mod:`journy_core.outbox.memory` for tests).
- :mod:`journy_core.outbox.relay`: claims rows and delivers them; :mod:`journy_core.outbox.calls` coalesces a claimed
  batch into calls; :mod:`journy_core.outbox.sending` keeps a few calls in flight, each entity's in commit order,
  under the rate limit, retrying with backoff on the row and marking refused rows dead.
- :mod:`journy_core.outbox.backend`: the ``outbox`` queue backend and its in-process relay thread;
  :mod:`journy_core.outbox.commands`: what ``manage.py journy_relay`` and ``flask journy relay`` share.
"""

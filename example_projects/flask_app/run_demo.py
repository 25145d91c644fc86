"""Run the Flask example end to end, without a browser: emulator, app, login, a page, an event, then a report.

    .venv/bin/python example_projects/flask_app/run_demo.py [--port 8484]

Starts the journy.io emulator on 127.0.0.1 (port 8484, or a free one if it is taken), creates the example app on a
temporary SQLite database, creates a user and a team (synced after the commit), logs in with the Flask test client
carrying a ``__journey`` cookie (linked at login), opens the team page (the snippet, with verification hashes) and
creates an invoice (a server-side ``track``), then prints what reached the emulator.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from journy_core.emulator import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8484, help="emulator port (default 8484)")
    args = parser.parse_args(argv)

    from teams import Team, User, create_app, db, journy  # noqa: PLC0415 - found through the sys.path entry above

    emulator = Emulator.start_on(args.port)
    if args.port and emulator.port != args.port:
        print(f"port {args.port} is taken; the emulator uses {emulator.port}")
    print(f"journy.io emulator: {emulator.url}")
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(tmp) / 'demo.db'}",
                "JOURNY_API_URL": emulator.url,
                "JOURNY_TRACKER_DOMAIN": emulator.url,
            }
        )
        # As journy.io with the website's secret: the browser's verification hashes are checked (see the README).
        emulator.configure(verification_secret=app.config["JOURNY_VERIFICATION_SECRET"])
        with app.app_context():
            ada = User(email="ada@acme.test", full_name="Ada Lovelace")
            ada.set_password("password")
            db.session.add(Team(name="Acme, Inc", plan="pro", domain="acme.test", members=[ada]))
            db.session.commit()  # after the commit: upsert_user, upsert_account, add_users_to_account
            print("created ada@acme.test in team 'Acme, Inc'")

        client = app.test_client()
        client.set_cookie("__journey", "demo-device-1")  # what journy.io's snippet sets in a browser
        response = client.post("/login", data={"email": "ada@acme.test", "password": "password"})
        print(f"POST /login -> {response.status_code} (the __journey cookie is linked)")
        page = client.get("/teams/1")
        print(f"GET /teams/1 -> {page.status_code}; the page's journy calls:")
        for line in re.findall(r"^journy\(.*\);$", page.text, flags=re.MULTILINE):
            print(f"    {line[:150]}")
        response = client.post("/teams/1/invoices", data={"amount": "250"})
        print(f"POST /teams/1/invoices -> {response.status_code} (tracks created_invoice)")
        client.post("/logout")
        with app.app_context():
            delivered = journy.flush(timeout=10)
            print(f"delivered: {delivered}; queue stats: {journy.stats()}")

    state = emulator.state()
    print("\n" + emulator.report())
    emulator.stop()
    ok = bool(state["users"] and state["accounts"] and state.get("links") and state.get("events"))
    print("\nOK" if ok else "\nsomething did not arrive")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

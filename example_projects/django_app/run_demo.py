"""The Django demo: the journy.io emulator, this example project, and data arriving in the emulator.

    .venv/bin/python example_projects/django_app/run_demo.py [--port 8484] [--app-port 8000] [--exit]

Starts the emulator on 127.0.0.1 (port 8484, or a free one if taken), points the project at it, migrates a fresh
SQLite database, creates the demo user and organization (synced after the commit), then plays a visit with
Django's test client: a visitor with a ``__journey`` cookie logs in (the device is linked), opens the dashboard
(the page carries the snippet with identify/account and their verification hashes) and exports a report (a
server-side event). It prints what the emulator received. In a terminal it then serves the app on
http://127.0.0.1:8000/ (log in as ada / demo-password) and the emulator's page until Ctrl-C; without one (CI, a
pipe) or with --exit it stops after printing. The emulator stands in for journy.io's tracker too, checking the
browser's verification hashes with the project's VERIFICATION_SECRET: pages opened in a browser show their calls on
the emulator's page, verified.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from journy_core.emulator import Emulator  # noqa: E402 - after the sys.path set-up

# Django is imported inside the functions: only once DJANGO_SETTINGS_MODULE and the emulator's URL are set.


def play_a_visit() -> None:
    from django.test import Client  # noqa: PLC0415

    client = Client()
    client.cookies["__journey"] = "demo-device-1"
    response = client.post("/login/", {"username": "ada", "password": "demo-password"})
    assert response.status_code == 302, response.status_code
    page = client.get("/dashboard/").content.decode()
    print("\nThe dashboard's snippet (journy calls, computed on the server):")
    for line in re.findall(r'journy\("(?:init|identify|account|pageview|event)".*?\);', page):
        print(f"  {line}")
    client.post("/reports/export/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8484, help="the emulator's port")
    parser.add_argument("--app-port", type=int, default=8000, help="the example app's port (interactive mode)")
    parser.add_argument("--exit", action="store_true", help="stop after printing, even in a terminal")
    args = parser.parse_args()

    emulator = Emulator.start_on(args.port)
    if args.port and emulator.port != args.port:
        print(f"port {args.port} is taken; the emulator uses {emulator.port}")
    workdir = tempfile.mkdtemp(prefix="journy-django-demo-")
    os.environ["JOURNY_API_URL"] = emulator.url
    os.environ["DEMO_DATABASE"] = str(Path(workdir) / "db.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    import django  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415

    django.setup()
    from django.conf import settings  # noqa: PLC0415

    # The emulator checks the browser's verification hashes with the project's own secret, as journy.io would
    # with the website's; the secret is never shown, there or here.
    emulator.configure(verification_secret=settings.JOURNY["VERIFICATION_SECRET"])
    try:
        print(f"journy.io emulator at {emulator.url}; example project database {os.environ['DEMO_DATABASE']}")
        call_command("migrate", verbosity=0)
        call_command("demo_data")
        play_a_visit()
        import journy_django  # noqa: PLC0415

        if not journy_django.get_journy().flush(timeout=10):
            print("some operations were not delivered within 10 s")
        print("\n" + emulator.report())
        interactive = sys.stdout.isatty() and not args.exit and not os.environ.get("CI")
        if interactive:
            print(
                f"\nThe app: http://127.0.0.1:{args.app_port}/ (ada / demo-password). Its pages load the tracker "
                f"from the emulator, so each journy(...) call your browser makes shows up on {emulator.url}/ under "
                "'Browser calls', with its verification hash checked against the project's secret, beside the "
                "server-side calls. Ctrl-C to stop."
            )
            call_command("runserver", f"127.0.0.1:{args.app_port}", use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

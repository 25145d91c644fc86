"""Flask-Login and SQLAlchemy are optional: absent (hidden in a subprocess), present but unconfigured, configured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flask import Flask, render_template_string
from flask_login import LoginManager

from journy_flask import Journy

ROOT = Path(__file__).resolve().parents[2]


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    hide = "".join(f"sys.modules[{name!r}] = None\n" for name in modules)  # makes `import name` fail
    script = "import sys\n" + hide + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_without_flask_login_the_extension_works_and_links_by_hand() -> None:
    result = run_without(
        ["flask_login"],
        """
        from flask import Flask, render_template_string
        from journy_flask import Journy
        app = Flask("nologin")
        app.config.update(SECRET_KEY="x", JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_TRACKER_ID="t",
                          JOURNY_TRACKER_DOMAIN="https://go.acme.test")
        journy = Journy(app)

        @app.get("/")
        def page():
            journy.link(user_id=7)
            return render_template_string("{{ journy_snippet() }}")

        client = app.test_client()
        client.set_cookie("__journey", "dev-1")
        html = client.get("/").text
        assert 'journy("init"' in html and "identify" not in html, html
        print([op.kind for op in app.extensions["journy"].journy.backend.operations])
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['link']"


def test_without_sqlalchemy_the_extension_works_and_model_settings_name_the_extra() -> None:
    result = run_without(
        ["sqlalchemy", "flask_sqlalchemy"],
        """
        from flask import Flask
        from journy_core import ConfigurationError
        from journy_flask import Journy
        app = Flask("nodb")
        app.config.update(JOURNY_QUEUE={"BACKEND": "memory"})
        Journy(app)
        with app.app_context():
            Journy().track("signed_in", user="1")

        class Team:
            pass

        other = Flask("nodb2")
        other.config.update(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_ACCOUNT_MODEL=Team)
        try:
            Journy(other)
        except ConfigurationError as exc:
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'journy[flask,sqlalchemy]'" in result.stdout


def test_flask_login_installed_but_not_set_up_means_anonymous_pages() -> None:
    app = Flask("login_unconfigured")
    app.config.update(JOURNY_QUEUE={"BACKEND": "memory"}, JOURNY_TRACKER_ID="t", JOURNY_TRACKER_DOMAIN="https://go.a.b")
    Journy(app)
    with app.test_request_context("/", headers={"Cookie": "__journey=dev"}):
        html = render_template_string("{{ journy_snippet() }}")
    assert "identify" not in html
    assert 'journy("pageview");' in html


def test_flask_login_configured_with_a_custom_current_user_callable() -> None:
    class Person:
        is_authenticated = True
        email = "ada@acme.test"

        def get_id(self) -> str:
            return "p-1"

    app = Flask("login_custom")
    app.config.update(
        SECRET_KEY="x",
        JOURNY_QUEUE={"BACKEND": "memory"},
        JOURNY_TRACKER_ID="t",
        JOURNY_TRACKER_DOMAIN="https://go.a.b",
        JOURNY_CURRENT_USER=Person,
    )
    LoginManager(app).user_loader(lambda user_id: None)
    Journy(app)
    with app.test_request_context("/"):
        html = render_template_string("{{ journy_snippet() }}")
    assert '"userId":"p-1"' in html
    assert '"email":"ada@acme.test"' in html

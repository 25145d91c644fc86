"""``python -m journy_core.emulator``: run the journy.io API emulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import hashlib
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .emulator import Emulator
from .options import ALL_FAULT_KINDS, ALL_PERMISSIONS, DEFAULT_API_KEY, FAULT_KINDS, is_loopback

__all__ = ["main", "parse_api_key"]


def parse_api_key(text: str) -> tuple[str, tuple[str, ...]]:
    """``KEY`` (every permission), ``KEY:`` (none) or ``KEY:Perm1,Perm2``; the last colon separates them."""
    if ":" not in text:
        return text, ALL_PERMISSIONS
    key, _, perms = text.rpartition(":")
    return key, tuple(name.strip() for name in perms.split(",") if name.strip())


def _describe_key(key: str, perms: Sequence[str]) -> str:
    # The dev key is public; any other key may be a real one pasted by mistake, so only its fingerprint shows.
    name = key if key == DEFAULT_API_KEY else f"<key sha256:{hashlib.sha256(key.encode()).hexdigest()[:8]}>"
    rights = "all permissions" if set(perms) == set(ALL_PERMISSIONS) else ", ".join(perms) or "no permissions"
    return f"{name} ({rights})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m journy_core.emulator",
        description="A local journy.io API emulator for development, demos and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8484, help="port, 0 for any free one (default 8484)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (exposes the received data and accepts a published key)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        metavar="KEY[:Perm1,Perm2]",
        help=f"an accepted key and its permissions (repeatable; default {DEFAULT_API_KEY} with all of "
        f"{', '.join(ALL_PERMISSIONS)})",
    )
    parser.add_argument(
        "--disabled-key",
        action="append",
        metavar="KEY",
        help="a key journy.io knows but has disabled: every call with it answers 403 (repeatable)",
    )
    parser.add_argument(
        "--website",
        action="append",
        metavar="DOMAIN",
        help="a website GET /tracking/snippet knows, its snippet loading the tracker from the emulator "
        "(repeatable; default localhost)",
    )
    parser.add_argument(
        "--verification-secret",
        metavar="SECRET",
        help="the website's identity-verification secret, as the app has it: the browser calls /tracker.js sends "
        "here are checked against it (default: not checked)",
    )
    parser.add_argument("--rate-limit", type=int, default=1800, help="calls per window per key (default 1800)")
    parser.add_argument("--rate-window", type=float, default=60.0, help="window in seconds (default 60)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of calls that fail, 0 to 1")
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"which faults to inject, of {','.join(ALL_FAULT_KINDS)} (default {','.join(FAULT_KINDS)})",
    )
    parser.add_argument("--timeout-delay", type=float, default=30.0, help="seconds a 'timeout' answer waits")
    parser.add_argument("--certfile", help="serve https with this PEM certificate (chain)")
    parser.add_argument("--keyfile", help="the private key of --certfile, if not in the same file")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault generator, for reproducible runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the emulator in the foreground; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(
            f"refusing --host {args.host}: the emulator accepts a published API key and shows every user, email "
            "and event it receives to anyone who can reach it, so it listens on loopback only; add "
            "--allow-remote to expose it on purpose (e.g. inside a private container network)"
        )
    api_keys = dict(parse_api_key(text) for text in args.api_key) if args.api_key else None
    ssl_context = _ssl_context(parser, args)
    try:
        emulator = Emulator(
            host=args.host,
            port=args.port,
            api_keys=api_keys,
            disabled_keys=args.disabled_key or (),
            websites=args.website,
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            latency=args.latency,
            fault_rate=args.fault_rate,
            faults=[name.strip() for name in args.faults.split(",") if name.strip()],
            timeout_delay=args.timeout_delay,
            seed=args.seed,
            verification_secret=args.verification_secret,
            allow_remote=args.allow_remote,
            ssl_context=ssl_context,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    _serve_until_stopped(emulator, api_keys)
    return 0


def _ssl_context(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--certfile``/``--keyfile``, or None for plain http; a bad pair is a usage error."""
    if not args.certfile:
        if args.keyfile:
            parser.error("--keyfile needs --certfile")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        parser.error(f"cannot load --certfile/--keyfile: {exc}")
    return context


def _serve_until_stopped(emulator: Emulator, api_keys: dict[str, tuple[str, ...]] | None) -> None:
    """Announces the running emulator, then waits for Ctrl-C or SIGTERM and stops it."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    keys = "; ".join(
        _describe_key(key, perms) for key, perms in (api_keys or {DEFAULT_API_KEY: ALL_PERMISSIONS}).items()
    )
    checked = "checked" if emulator.config()["verification_secret_set"] else "not checked (no --verification-secret)"
    print(
        f"journy.io emulator listening on {emulator.url} - live page at {emulator.url}/ - API key(s): {keys} "
        f"- tracker at {emulator.url}/tracker.js, verification hashes {checked} - Ctrl-C to stop",
        flush=True,
    )
    try:
        # A timed wait keeps the main thread responsive to Ctrl-C on every platform.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print("journy.io emulator stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())

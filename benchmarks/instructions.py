"""The framework overhead counted in CPU instructions instead of timed: deterministic, so small changes show.

    .venv/bin/python benchmarks/instructions.py [flask|flask-no-database|django] [--requests 300] [--from-string]
        [--stand-in | --inject] [--layouts 5]

Runs the page of ``flask_overhead.py`` (or ``django_overhead.py``) with and without journy under valgrind's
callgrind (Debian's ``valgrind`` package), once with no measured requests and once with ``--requests``, after the
same warm-up, and prints the instructions per request of each and their ratio: what the integration adds, free of
the machine's load. Wall-clock ratios on a shared machine come out somewhat above these (cache misses count there);
the timed benchmarks stay the measure of the goals. A count is deterministic for one program, but two programs
that differ by one imported module can differ by a few percent for a reason of layout alone: which hot attribute
lookups collide in CPython's method cache depends on the order classes were created. So each side is counted in
``--layouts`` layouts (a few classes created first to shift them) and the median printed, with each layout's ratio.
``--from-string`` (Flask pages): the view renders with
``render_template_string``, which compiles the template on every request. ``--stand-in`` (Flask pages): the page
without journy renders the journy page's template byte for byte, its ``journy_snippet()`` a plain global returning
the pasted snippet; with ``--from-string`` this leaves out what compiling one more expression costs (any call costs
the same there) and shows the extension's own work. ``--inject`` (Flask pages): the journy page is the page without
journy's template call, the snippet put in by ``JOURNY_INJECT_SNIPPET``: what a ``render_template_string`` page
costs when journy adds no expression to compile.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES = ("flask", "flask-no-database", "django")


def shift_type_versions(count: int) -> None:
    """Give ``count`` new classes a type version tag (looking an attribute up assigns it) before anything else, so
    that every class created afterwards gets a tag ``count`` higher. CPython's method cache is indexed by tag and
    attribute name: which hot lookups collide there, and miss on every call, depends on the tags, hence on the order
    in which a program creates its classes. One unlucky collision costs a page several percent."""
    for number in range(count):
        getattr(type(f"_Shift{number}", (), {}), "attribute", None)


def run_requests(page: str, with_journy: bool, requests: int, variant: dict[str, bool], shift: int = 0) -> None:
    """In the child process (under valgrind): build the page's app, warm up, then serve ``requests`` requests."""
    shift_type_versions(shift)
    sys.path.insert(0, str(HERE))
    if page.startswith("flask"):
        import flask_overhead

        app = flask_overhead.make_app(
            with_journy,
            database=page == "flask",
            from_string=variant["from_string"],
            stand_in=variant["stand_in"],
            inject=variant["inject"],
        )
        client = flask_overhead.logged_in_client(app)
        url = "/"
    else:
        import django_overhead

        django_overhead.configure()
        client, url = django_overhead.logged_in_client(django_overhead.set_up(), with_journy)
    for _ in range(100):
        client.get(url)
    # What the set-up allocated stays out of the garbage collector's way: otherwise one full collection of the
    # start-up heap (tens of millions of instructions) lands in one run's window and not in the other's.
    gc.collect()
    gc.freeze()
    for _ in range(requests):
        client.get(url)


#: The Flask page's variants (``make_app`` keywords), each a command-line flag of the same name.
VARIANTS = ("from_string", "stand_in", "inject")


def child_command(page: str, with_journy: bool, requests: int, variant: dict[str, bool], shift: int = 0) -> list[str]:
    """The command line of one child process: ``requests`` requests to one side of ``page``."""
    command = [sys.executable, __file__, "--child", page, "--requests", str(requests), "--shift", str(shift)]
    if with_journy:
        command.append("--with-journy")
    return command + ["--" + name.replace("_", "-") for name in VARIANTS if variant.get(name)]


#: The same dict layouts in every run.
CHILD_ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def compile_first(page: str, with_journy: bool, variant: dict[str, bool]) -> None:
    """Run the side once, unmeasured, so that the modules changed since the last run are compiled into
    ``__pycache__`` before any count: otherwise the first counted process compiles them (tens of millions of
    instructions) and the difference between its two runs, hence that side's figure, is off by that much."""
    command = child_command(page, with_journy, 0, variant)
    result = subprocess.run(command, capture_output=True, text=True, env=CHILD_ENV, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the page failed ({result.returncode}):\n{result.stderr[-2000:]}")


def instructions(page: str, with_journy: bool, requests: int, variant: dict[str, bool], shift: int) -> int:
    """Instructions valgrind counted for the whole child process."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += child_command(page, with_journy, requests, variant, shift)
    result = subprocess.run(command, capture_output=True, text=True, env=CHILD_ENV, check=False)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", nargs="?", choices=PAGES, default="flask")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--from-string", action="store_true", help="Flask: render_template_string on every request")
    parser.add_argument(
        "--stand-in", action="store_true", help="Flask: compare with the same template, journy_snippet() a plain global"
    )
    parser.add_argument(
        "--inject", action="store_true", help="Flask: journy's page without the template call, JOURNY_INJECT_SNIPPET on"
    )
    parser.add_argument(
        "--layouts", type=int, default=5, help="class layouts counted per side (the median is printed); default 5"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shift", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--with-journy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variant = {name: bool(getattr(args, name)) for name in VARIANTS}
    if any(variant.values()) and not args.page.startswith("flask"):
        parser.error("--from-string, --stand-in and --inject are for the Flask pages")
    if args.stand_in and args.inject:
        parser.error("--stand-in and --inject compare different pages: give one")
    if args.child:  # the parent's count without requests runs with --requests 0
        run_requests(args.page, args.with_journy, args.requests, variant, args.shift)
        return 0
    if args.layouts < 1 or args.requests < 1:
        parser.error("--layouts and --requests must be at least 1")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    layouts = {with_journy: count_side(args, variant, with_journy) for with_journy in (False, True)}
    per_request = {with_journy: statistics.median(found) for with_journy, found in layouts.items()}
    without, with_ = per_request[False], per_request[True]
    how = " with render_template_string" if args.from_string else ""
    how += ", the snippet injected" if args.inject else ""
    print(f"{args.page} page{how}, {args.requests} requests after a warm-up (valgrind callgrind):")
    label = "plain global:  " if args.stand_in else "without journy:"
    print(f"  {label} {without:12,.0f} instructions per request")
    print(f"  with journy:    {with_:12,.0f} instructions per request (+{with_ - without:,.0f})")
    print(f"  ratio: {with_ / without:.3f}   (medians of {args.layouts} class layouts)")
    ratios = ", ".join(f"{j / w:.3f}" for w, j in zip(layouts[False], layouts[True], strict=True))
    print(f"  ratio per layout: {ratios}")
    return 0


def count_side(args: argparse.Namespace, variant: dict[str, bool], with_journy: bool) -> list[float]:
    """One side's instructions per request in each of ``args.layouts`` class layouts (see
    :func:`shift_type_versions`): the difference between a run with ``args.requests`` requests and one without,
    the runs in parallel, one per core."""
    # The stand-in replaces the page without journy; injection is journy's way of serving its page.
    side = {**variant, "stand_in": args.stand_in and not with_journy, "inject": args.inject and with_journy}
    compile_first(args.page, with_journy, side)
    shifts = [37 * layout for layout in range(args.layouts)]
    runs = [(shift, requests) for shift in shifts for requests in (0, args.requests)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(pool.map(lambda run: instructions(args.page, with_journy, run[1], side, run[0]), runs))
    return [(counts[i + 1] - counts[i]) / args.requests for i in range(0, len(counts), 2)]


if __name__ == "__main__":
    sys.exit(main())

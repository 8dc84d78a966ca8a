"""The ``rustbox`` command line.

Exit codes: 0 the run was OK (``check``: strict mode available), 1 any other
verdict (``check``: strict mode unavailable), 2 usage or input error, 3 the
host cannot run sandboxes (missing root, cgroup controller, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import attrs

from rustbox._errors import HostUnsupported, InvalidInput, RustboxError
from rustbox._host._probe import probe_host
from rustbox._judge import (
    CustomChecker,
    JudgeReport,
    LanguageTable,
    Submission,
    Supervisor,
    TestCase,
    load_tests,
    parse_checker,
    probe_toolchains,
)
from rustbox._judge._languages import EXTENSIONS
from rustbox._limits import Limits, MiB, parse_size
from rustbox._supervisor import File

EXIT_OK, EXIT_VERDICT, EXIT_USAGE, EXIT_HOST = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"rustbox: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits")
    group.add_argument("--mem", metavar="SIZE", help="memory limit, e.g. 256M (default 256M)")
    group.add_argument("--time", metavar="S", help="cpu time limit in seconds (default 2)")
    group.add_argument("--wall-time", metavar="S", help="wall time limit in seconds (default 5)")
    group.add_argument("--processes", metavar="N", help="process/thread limit (default 16)")
    group.add_argument("--stdout-max", metavar="SIZE", help="stdout cap (default 64M)")
    group.add_argument("--stderr-max", metavar="SIZE", help="stderr cap (default 64M)")
    group.add_argument(
        "--fsize", metavar="SIZE", help="largest file the program may write (default 16M)"
    )
    group.add_argument("--open-files", metavar="N", help="open file limit (default 64)")
    group.add_argument("--stack", metavar="SIZE", help="stack limit (default 64M)")
    group.add_argument(
        "--as", dest="address_space", metavar="SIZE", help="address-space limit (default none)"
    )
    group.add_argument("--box-size", metavar="SIZE", help="size of the /box tmpfs (default 64M)")


_LIMIT_FIELDS = {
    "mem": "memory",
    "time": "cpu_time",
    "wall_time": "wall_time",
    "processes": "processes",
    "stdout_max": "stdout_max",
    "stderr_max": "stderr_max",
    "fsize": "file_size",
    "open_files": "open_files",
    "stack": "stack",
    "address_space": "address_space",
    "box_size": "box_size",
}


def limits_from_args(args: argparse.Namespace) -> Limits:
    given = {
        field: getattr(args, option)
        for option, field in _LIMIT_FIELDS.items()
        if getattr(args, option, None) is not None
    }
    if "cpu_time" in given and "wall_time" not in given:
        try:
            given["wall_time"] = max(float(given["cpu_time"]) * 2 + 1, 5.0)
        except ValueError:
            pass  # Limits names the bad field
    return Limits(**given)


def _read_files(specs: Sequence[str]) -> dict[str, bytes | File]:
    files: dict[str, bytes | File] = {}
    for spec in specs:
        name, sep, host_path = spec.partition("=")
        if not sep:
            name, host_path = os.path.basename(spec), spec
        try:
            with open(host_path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InvalidInput(
                f"--file {spec}", f"cannot read {host_path!r}: {exc.strerror}"
            ) from None
        executable = os.access(host_path, os.X_OK)
        files[name] = File(data, executable=True) if executable else data
    return files


def _read_stdin(path: str | None) -> bytes:
    if path is None:
        return b""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidInput("--stdin", f"cannot read {path!r}: {exc.strerror}") from None


def _env(pairs: Sequence[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput("--env", f"expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise InvalidInput("command", "missing: give it after '--', e.g. rustbox run -- /bin/true")
    limits = limits_from_args(args)
    files = _read_files(args.file or [])
    stdin = _read_stdin(args.stdin)
    env = _env(args.env or [])

    async def main() -> int:
        async with Supervisor() as sv:
            result = await sv.run(
                command,
                files=files,
                stdin=stdin,
                limits=limits,
                env=env,
                collect=args.collect or (),
            )
        print(result.to_json(indent=2 if args.pretty else None))
        return EXIT_OK if result.ok else EXIT_VERDICT

    code: int = anyio.run(main, backend=args.backend)
    return code


def _cmd_check(args: argparse.Namespace) -> int:
    report = probe_host()
    print(report.to_json() if args.json else report.to_text())
    return EXIT_OK if report.strict_ok else EXIT_VERDICT


def _languages(args: argparse.Namespace) -> LanguageTable:
    return LanguageTable.from_file(args.config) if args.config else LanguageTable()


def _megabytes(value: str) -> int:
    """``--mem 256`` means MB, as in the Rust rustbox; ``--mem 1G`` is accepted too."""
    if value.strip().isdigit():
        return int(value) * MiB
    return parse_size(value, "--mem")


def _cmd_execute_code(args: argparse.Namespace) -> int:
    table = _languages(args)
    language = table.get(args.language)
    submission = Submission(language=language.name, code=args.code)
    base = language.run_limits
    overrides: dict[str, Any] = {}
    if args.mem is not None:
        overrides["memory"] = _megabytes(args.mem)
    if args.time is not None:
        overrides["cpu_time"] = args.time
        if args.wall_time is None:
            overrides["wall_time"] = max(args.time * 2, base.wall_time)
    if args.wall_time is not None:
        overrides["wall_time"] = args.wall_time
    if args.processes is not None:
        overrides["processes"] = args.processes
    limits = attrs.evolve(base, **overrides) if overrides else None
    stdin = args.stdin.encode() if args.stdin is not None else b""

    async def main() -> JudgeReport:
        async with Supervisor(languages=table) as sv:
            return await sv.judge(submission, [TestCase(stdin=stdin)], limits=limits)

    report = anyio.run(main)
    print(report.to_json(indent=2))
    return EXIT_OK if report.verdict.value == "AC" else EXIT_VERDICT


def _checker(spec: str | None) -> str | CustomChecker | None:
    if spec is None or (os.path.sep not in spec and not os.path.exists(spec)):
        return spec
    try:
        with open(spec, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidInput("--checker", f"cannot read {spec!r}: {exc.strerror}") from None
    if spec.endswith(".py"):
        return CustomChecker.python(data)
    return CustomChecker(("./checker",), (("checker", data),))


def _cmd_judge(args: argparse.Namespace) -> int:
    table = _languages(args)
    try:
        with open(args.source, encoding="utf-8") as f:
            code = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("--source", f"cannot read {args.source!r}: {exc}") from None
    language = args.language or _guess_language(table, args.source)
    submission = Submission(language=language, code=code)
    tests = load_tests(args.tests)
    checker = _checker(args.checker)
    parse_checker(checker)  # names a bad checker before any sandbox starts

    async def main() -> JudgeReport:
        async with Supervisor(languages=table) as sv:
            return await sv.judge(
                submission, tests, checker=checker, stop_on_first_failure=args.stop_on_failure
            )

    report = anyio.run(main)
    print(report.to_json(indent=2) if args.json else _report_text(report))
    return EXIT_OK if report.verdict.value == "AC" else EXIT_VERDICT


def _guess_language(table: LanguageTable, path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        known = ", ".join(sorted(table.languages))
        raise InvalidInput(
            "--language", f"cannot tell the language of {path!r}; give one of {known}"
        )
    return EXTENSIONS[ext]


def _report_text(report: JudgeReport) -> str:
    lines = [f"verdict: {report.verdict.value}  ({report.verdict_provenance})"]
    if report.compile is not None:
        c = report.compile.result
        lines.append(
            f"compile: {c.status.value} cpu={c.cpu_time:.3f}s wall={c.wall_time:.3f}s "
            f"peak={c.memory_peak / MiB:.1f}MiB"
        )
        if not report.compile.ok:
            lines.append(report.compile.stderr.decode(errors="replace").rstrip()[-4000:])
    for case in report.cases:
        lines.append(
            f"  {case.name:>8}  {case.verdict.value:3}  cpu={case.cpu_time:.3f}s "
            f"wall={case.wall_time:.3f}s peak={case.memory_peak / MiB:.1f}MiB"
            + (f"  {case.checker}" if case.checker and case.verdict.value != "AC" else "")
        )
    return "\n".join(lines)


def _cmd_languages(args: argparse.Namespace) -> int:
    table = _languages(args)
    toolchains = probe_toolchains(table)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "language": t.language,
                        "available": t.available,
                        "version": t.version,
                        "aliases": list(table.languages[t.language].aliases),
                    }
                    for t in toolchains
                ],
                indent=2,
            )
        )
    else:
        for t in toolchains:
            aliases = ", ".join(table.languages[t.language].aliases)
            state = "ok     " if t.available else "MISSING"
            print(f"{t.language:11} {state} {t.version}  (aliases: {aliases})")
    return EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from rustbox._batch._runner import BatchOptions, run_batch

    options = BatchOptions(
        submissions=args.submissions,
        problems=args.problems,
        out=args.out,
        concurrency=args.concurrency,
        resume=args.resume,
        json=args.json,
        backend=args.backend,
    )
    try:
        summary = run_batch(options)
    except KeyboardInterrupt:
        print("rustbox: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2))
    return EXIT_OK


_SERVE_OPTIONS = {
    "host": "host",
    "port": "port",
    "workers": "workers",
    "db": "db",
    "api_key": "api_key",
    "backend": "backend",
    "queue_size": "queue_size",
    "sync_wait_timeout": "sync_wait_timeout",
    "drain_timeout": "drain_timeout",
    "rate_limit": "rate_limit",
    "rate_burst": "rate_burst",
    "trust_proxies": "trust_proxies",
    "allow_localhost_webhooks": "allow_localhost_webhooks",
    "node_id": "node_id",
    "config": "languages_config",
    "result_ttl": "result_ttl",
    "idempotency_ttl": "idempotency_ttl",
}


def _cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP judge service; settings from RUSTBOX_* variables, then the options."""
    import logging

    from rustbox._service import ServiceConfig, serve  # the web stack loads only here

    given = {
        field: getattr(args, option)
        for option, field in _SERVE_OPTIONS.items()
        if getattr(args, option, None) is not None
    }
    config = ServiceConfig.from_env(os.environ, **given)
    level = args.log_level or os.environ.get("RUSTBOX_LOG_LEVEL", "info")
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            url = await tg.start(serve, config)
            print(
                f"rustbox serve: listening on {url} (workers {config.workers}, db {config.db})",
                flush=True,
            )

    try:
        anyio.run(main, backend=config.backend)
    except BaseExceptionGroup as group:  # a start-up failure, e.g. the port is taken
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        raise leaf from None
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rustbox", description="Run untrusted code in kernel-enforced sandboxes.")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run one command in a sandbox; prints the result as JSON")
    _add_limit_options(run)
    run.add_argument(
        "--file",
        action="append",
        metavar="[NAME=]PATH",
        help="copy a host file into /box (repeatable)",
    )
    run.add_argument(
        "--stdin", metavar="PATH", help="file to feed on stdin ('-' for this process's stdin)"
    )
    run.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="environment variable (repeatable; default: a minimal PATH/HOME/LANG)",
    )
    run.add_argument(
        "--collect",
        action="append",
        metavar="PATH",
        help="file to copy back out of /box (repeatable)",
    )
    run.add_argument("--pretty", action="store_true", help="indent the JSON")
    run.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help=argparse.SUPPRESS
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    run.set_defaults(func=_cmd_run)

    execute = sub.add_parser("execute-code", help="run a snippet in a language; prints JSON")
    execute.add_argument(
        "--language", "-l", required=True, help="language or alias (py, cc, c++, js, ts, rs, ...)"
    )
    execute.add_argument("--code", "-c", required=True, help="the source code")
    execute.add_argument("--stdin", help="text to feed on stdin")
    execute.add_argument("--mem", metavar="MB", help="memory limit in MB (default: the language's)")
    execute.add_argument("--time", type=float, metavar="S", help="cpu time limit in seconds")
    execute.add_argument("--wall-time", type=float, metavar="S", help="wall time limit in seconds")
    execute.add_argument("--processes", type=int, metavar="N", help="process limit")
    execute.add_argument("--config", metavar="TOML", help="language configuration file")
    execute.set_defaults(func=_cmd_execute_code)

    judge = sub.add_parser("judge", help="compile a source and judge it against a test directory")
    judge.add_argument("--language", "-l", help="language or alias (default: from the extension)")
    judge.add_argument("--source", "-s", required=True, help="the source file")
    judge.add_argument("--tests", "-t", required=True, help="directory of NAME.in + NAME.out")
    judge.add_argument("--checker", help="tokens (default), exact, float:EPS, or a checker program")
    judge.add_argument(
        "--stop-on-failure", action="store_true", help="stop at the first failed case"
    )
    judge.add_argument("--json", action="store_true", help="the full report as JSON")
    judge.add_argument("--config", metavar="TOML", help="language configuration file")
    judge.set_defaults(func=_cmd_judge)

    batch = sub.add_parser("batch", help="grade a folder of submissions into a JSONL file")
    batch.add_argument("submissions", help="folder of submission folders")
    batch.add_argument("--problems", required=True, help="folder of problem folders")
    batch.add_argument("--out", required=True, help="results file (JSON lines, appended)")
    batch.add_argument("--concurrency", type=int, metavar="N", help="sandboxes at once")
    batch.add_argument("--resume", action="store_true", help="skip what --out already holds")
    batch.add_argument("--json", action="store_true", help="no progress bar; summary as JSON")
    batch.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help=argparse.SUPPRESS
    )
    batch.set_defaults(func=_cmd_batch)

    languages = sub.add_parser(
        "languages", help="list languages and whether this host has their toolchain"
    )
    languages.add_argument("--json", action="store_true", help="machine-readable output")
    languages.add_argument("--config", metavar="TOML", help="language configuration file")
    languages.set_defaults(func=_cmd_languages)

    serve = sub.add_parser(
        "serve",
        help="HTTP judge service (REST shape of the Rust rustbox judge-service)",
        description="Each option also reads RUSTBOX_<OPTION> from the environment "
        "(e.g. RUSTBOX_PORT); an option given here wins. See docs/http-api.md.",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 4096; 0 picks a free one)")
    serve.add_argument(
        "--workers", type=int, help="submissions judged at once (default: the cpu count)"
    )
    serve.add_argument("--db", metavar="PATH", help="SQLite file (default rustbox-service.db)")
    serve.add_argument(
        "--api-key", help="require this x-api-key (prefer RUSTBOX_API_KEY: argv is public)"
    )
    serve.add_argument("--backend", choices=("asyncio", "trio"), help="event loop (asyncio)")
    serve.add_argument("--queue-size", type=int, help="waiting submissions before 503 (1000)")
    serve.add_argument(
        "--sync-wait-timeout", type=float, metavar="S", help="?wait=true limit before 408 (30)"
    )
    serve.add_argument(
        "--drain-timeout", type=float, metavar="S", help="shutdown grace for running ones (30)"
    )
    serve.add_argument(
        "--rate-limit", type=float, metavar="R", help="requests/s per client, 0 = off (50)"
    )
    serve.add_argument("--rate-burst", type=int, metavar="N", help="token bucket size (100)")
    serve.add_argument(
        "--trust-proxies", type=int, metavar="N", help="proxies whose X-Forwarded-For counts (0)"
    )
    serve.add_argument(
        "--allow-localhost-webhooks",
        action="store_true",
        default=None,
        help="allow http:// webhooks to loopback (development only)",
    )
    serve.add_argument(
        "--result-ttl",
        type=float,
        metavar="S",
        help="delete ended submissions this long after they end, 0 = keep (604800: 7 days)",
    )
    serve.add_argument(
        "--idempotency-ttl",
        type=float,
        metavar="S",
        help="an Idempotency-Key replays for this long, 0 = while kept (86400)",
    )
    serve.add_argument("--node-id", help="name in /api/health (default: the hostname)")
    serve.add_argument("--config", metavar="TOML", help="language configuration file")
    serve.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log level (info)"
    )
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser(
        "check", help="report what this host offers and whether strict mode can run"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except InvalidInput as exc:
        print(f"rustbox: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HostUnsupported as exc:
        print(f"rustbox: {exc}", file=sys.stderr)
        print("run 'rustbox check' for details", file=sys.stderr)
        return EXIT_HOST
    except RustboxError as exc:
        print(f"rustbox: internal error: {exc}", file=sys.stderr)
        return EXIT_HOST


def console_main() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    console_main()

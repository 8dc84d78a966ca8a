"""The judge against real toolchains: every language, every verdict, every checker.

The per-language matrix (hello world, wrong answer, compile error, runtime
error, infinite loop, memory hog, a small algorithm problem) runs on asyncio for
all eight languages and on trio for python and cpp; the remaining tests pin one
behaviour each and run on asyncio only (the backend makes no difference to
them, and the machine has two cores).
"""

from __future__ import annotations

import json
import random
import re
import textwrap
import time
from collections.abc import Sequence

import attrs
import pytest

import rustbox
from rustbox._limits import MiB

pytestmark = [pytest.mark.anyio, pytest.mark.root]

LANGUAGES = ("python", "c", "cpp", "java", "javascript", "typescript", "go", "rust")
COMPILED = ("c", "cpp", "java", "typescript", "go", "rust")
ON_TRIO = ("python", "cpp")

TABLE = rustbox.LanguageTable()

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def matrix(languages: Sequence[str] = LANGUAGES) -> pytest.MarkDecorator:
    """Every language on asyncio, the representative subset on trio too."""
    params = [pytest.param("asyncio", name, id=f"{name}-asyncio") for name in languages]
    params += [
        pytest.param("trio", name, id=f"{name}-trio") for name in ON_TRIO if name in languages
    ]
    return pytest.mark.parametrize(("anyio_backend", "language"), params)


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def show(report: rustbox.JudgeReport) -> str:
    """Everything worth seeing when an assertion fails."""
    lines = [f"{report.language}: {report.verdict} ({report.verdict_provenance})"]
    if report.compile is not None:
        lines.append(f"compile ok={report.compile.ok} stderr={report.compile.stderr[-800:]!r}")
    for case in report.cases:
        r = case.result
        lines.append(
            f"case {case.name}: {case.verdict} status={r.status} exit={r.exit_code} "
            f"signal={r.signal} tle={r.tle} cpu={r.cpu_time:.3f} peak={r.memory_peak >> 20}MiB "
            f"checker={case.checker!r} stdout={r.stdout[:200]!r} stderr={r.stderr[-400:]!r} "
            f"error={r.evidence.error!r}"
        )
    return "\n".join(lines)


async def judge(
    language: str,
    code: str,
    tests: Sequence[rustbox.TestCase] | None = None,
    **kwargs: object,
) -> rustbox.JudgeReport:
    async with rustbox.Supervisor() as sv:
        return await sv.judge(rustbox.Submission(language, code), tests, **kwargs)  # type: ignore[arg-type]


def quick_limits(language: str) -> rustbox.Limits:
    """The language's judge limits with 1 s of cpu (the wall limit stays generous)."""
    return attrs.evolve(TABLE.get(language).run_limits, cpu_time=1, wall_time=5)


# -- sources ----------------------------------------------------------------------

HELLO = {
    "python": 'print("hello world")\n',
    "c": src(r"""
        #include <stdio.h>
        int main(void) { puts("hello world"); return 0; }
    """),
    "cpp": src(r"""
        #include <iostream>
        int main() { std::cout << "hello world\n"; }
    """),
    "java": src(r"""
        public class Main {
            public static void main(String[] args) { System.out.println("hello world"); }
        }
    """),
    "javascript": 'console.log("hello world");\n',
    "typescript": src("""
        const greeting: string = "hello world";
        console.log(greeting);
    """),
    "go": src("""
        package main

        import "fmt"

        func main() { fmt.Println("hello world") }
    """),
    "rust": 'fn main() { println!("hello world"); }\n',
}

#: A program that prints a wrong answer to "add the two numbers".
WRONG = {
    "python": "a, b = map(int, input().split())\nprint(a - b)\n",
    "c": src(r"""
        #include <stdio.h>
        int main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\n", a - b); }
    """),
    "cpp": src(r"""
        #include <iostream>
        int main() { long a, b; std::cin >> a >> b; std::cout << a - b << "\n"; }
    """),
    "java": src(r"""
        import java.util.Scanner;
        public class Main {
            public static void main(String[] args) {
                Scanner in = new Scanner(System.in);
                long a = in.nextLong(), b = in.nextLong();
                System.out.println(a - b);
            }
        }
    """),
    "javascript": src("""
        const [a, b] = require("fs").readFileSync(0, "utf8").trim().split(/\\s+/).map(Number);
        console.log(a - b);
    """),
    "typescript": src("""
        import { readFileSync } from "fs";
        const [a, b]: number[] = readFileSync(0, "utf8").trim().split(/\\s+/).map(Number);
        console.log(a - b);
    """),
    "go": src("""
        package main

        import "fmt"

        func main() {
            var a, b int64
            fmt.Scan(&a, &b)
            fmt.Println(a - b)
        }
    """),
    "rust": src("""
        use std::io::Read;
        fn main() {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).unwrap();
            let v: Vec<i64> = s.split_whitespace().map(|t| t.parse().unwrap()).collect();
            println!("{}", v[0] - v[1]);
        }
    """),
}

#: Source that does not compile, and a piece of the compiler's complaint.
COMPILE_ERROR = {
    "c": ("int main(void) { return undefined_name; }\n", r"undefined_name.*undeclared"),
    "cpp": ("int main() { undefined_name(); }\n", r"undefined_name.*not declared"),
    "java": (
        src("""
            public class Main {
                public static void main(String[] args) { int x = "text"; }
            }
        """),
        r"incompatible types: String cannot be converted to int",
    ),
    # A syntax error: esbuild only strips types, so this (not a type error) is TypeScript's CE.
    "typescript": ("const x: number = ;\n", r"ERROR.*Unexpected"),
    "go": ("package main\n\nfunc main() { x := 1 }\n", r"x declared (but|and) not used"),
    "rust": ('fn main() { let x: i32 = "text"; }\n', r"E0308.*mismatched types"),
}

#: A program that fails at run time: source, its exit code, a piece of its stderr.
RUNTIME_ERROR = {
    # An uncaught exception: Python exits 1 with a traceback.
    "python": ("x = int(input())\nprint(1 // x)\n", 1, "ZeroDivisionError"),
    "c": ("#include <stdlib.h>\nint main(void) { exit(3); }\n", 3, ""),
    "cpp": ("int main() { return 3; }\n", 3, ""),
    # An uncaught Java exception: the JVM exits 1 (RE, not SIG).
    "java": (
        src("""
            public class Main {
                public static void main(String[] args) { throw new IllegalStateException("boom"); }
            }
        """),
        1,
        "IllegalStateException: boom",
    ),
    "javascript": ('throw new Error("boom");\n', 1, "Error: boom"),
    "typescript": ('const e: Error = new Error("boom");\nthrow e;\n', 1, "Error: boom"),
    # Go's runtime exits 2 on an unrecovered panic.
    "go": (
        src("""
            package main

            import "fmt"

            func main() {
                var d int
                fmt.Scan(&d)
                fmt.Println(10 / d)
            }
        """),
        2,
        "integer divide by zero",
    ),
    # Rust exits 101 on a panic.
    "rust": ('fn main() { panic!("boom"); }\n', 101, "boom"),
}

INFINITE_LOOP = {
    "python": "while True:\n    pass\n",
    "c": "int main(void) { volatile unsigned long x = 0; for (;;) x++; }\n",
    "cpp": "int main() { volatile unsigned long x = 0; for (;;) x++; }\n",
    "java": src("""
        public class Main {
            public static void main(String[] args) { long x = 0; while (true) { x++; } }
        }
    """),
    "javascript": "let x = 0;\nfor (;;) { x++; }\n",
    "typescript": "let x: number = 0;\nfor (;;) { x++; }\n",
    "go": "package main\n\nfunc main() {\n\tx := 0\n\tfor {\n\t\tx++\n\t}\n}\n",
    "rust": src("""
        fn main() {
            let mut x: u64 = 0;
            loop { x = std::hint::black_box(x + 1); }
        }
    """),
}

#: Allocate 1 GiB and touch every page (over every judge limit: 256 or 512 MiB).
MEMORY_HOG = {
    "python": src("""
        b = bytearray(1 << 30)
        for i in range(0, len(b), 4096):
            b[i] = 1
        print(len(b))
    """),
    # volatile: gcc -O2 would drop a malloc+memset whose result is never looked at.
    "c": src(r"""
        #include <stdio.h>
        #include <stdlib.h>
        int main(void) {
            volatile char *p = malloc(1UL << 30);
            for (unsigned long i = 0; i < (1UL << 30); i += 4096) p[i] = 1;
            printf("%d\n", p[4096]);
        }
    """),
    "cpp": src(r"""
        #include <cstdio>
        #include <vector>
        int main() { std::vector<char> v(1UL << 30, 1); std::printf("%d\n", v[777]); }
    """),
    # A byte[][] filled block by block: a Java program that really uses 1 GiB.
    "java": src("""
        public class Main {
            public static void main(String[] args) {
                byte[][] blocks = new byte[1024][];
                for (int i = 0; i < blocks.length; i++) {
                    blocks[i] = new byte[1 << 20];
                    java.util.Arrays.fill(blocks[i], (byte) 1);
                }
                System.out.println(blocks[5][5]);
            }
        }
    """),
    # Node runs with --max-old-space-size=448, so a hog on the V8 heap (arrays, strings)
    # dies of V8's own heap OOM (an abort, SIG) before the cgroup limit. A Buffer lives
    # off the V8 heap, so filling 1 GiB of it meets the cgroup's 512 MiB limit: MLE.
    "javascript": "const b = Buffer.alloc(1 << 30);\nb.fill(1);\nconsole.log(b[100]);\n",
    "typescript": "const b: Buffer = Buffer.alloc(1 << 30);\nb.fill(1);\nconsole.log(b[100]);\n",
    "go": src("""
        package main

        import "fmt"

        func main() {
            b := make([]byte, 1<<30)
            for i := range b {
                b[i] = 1
            }
            fmt.Println(b[7])
        }
    """),
    "rust": src("""
        fn main() {
            let v = vec![1u8; 1 << 30];
            println!("{}", v[std::hint::black_box(99)]);
        }
    """),
}

#: Read N and N integers; print their sum, then the numbers sorted.
SUM_AND_SORT = {
    "python": src("""
        import sys
        data = sys.stdin.buffer.read().split()
        n = int(data[0])
        xs = sorted(map(int, data[1 : 1 + n]))
        sys.stdout.write(f"{sum(xs)}\\n{' '.join(map(str, xs))}\\n")
    """),
    "c": src(r"""
        #include <stdio.h>
        #include <stdlib.h>
        static int cmp(const void *a, const void *b) {
            long long x = *(const long long *)a, y = *(const long long *)b;
            return (x > y) - (x < y);
        }
        int main(void) {
            int n;
            if (scanf("%d", &n) != 1) return 1;
            long long *v = malloc(sizeof *v * (n + 1)), s = 0;
            for (int i = 0; i < n; i++) { scanf("%lld", &v[i]); s += v[i]; }
            qsort(v, n, sizeof *v, cmp);
            printf("%lld\n", s);
            for (int i = 0; i < n; i++) printf(i ? " %lld" : "%lld", v[i]);
            printf("\n");
            return 0;
        }
    """),
    "cpp": src(r"""
        #include <algorithm>
        #include <iostream>
        #include <vector>
        int main() {
            std::ios::sync_with_stdio(false);
            std::cin.tie(nullptr);
            int n;
            std::cin >> n;
            std::vector<long long> v(n);
            long long s = 0;
            for (auto &x : v) { std::cin >> x; s += x; }
            std::sort(v.begin(), v.end());
            std::cout << s << '\n';
            for (int i = 0; i < n; i++) std::cout << (i ? " " : "") << v[i];
            std::cout << '\n';
        }
    """),
    "java": src(r"""
        import java.io.*;
        import java.util.*;
        public class Main {
            public static void main(String[] args) throws IOException {
                String[] t = new String(System.in.readAllBytes()).trim().split("\\s+");
                int n = Integer.parseInt(t[0]);
                long[] v = new long[n];
                long s = 0;
                for (int i = 0; i < n; i++) { v[i] = Long.parseLong(t[i + 1]); s += v[i]; }
                Arrays.sort(v);
                StringBuilder out = new StringBuilder().append(s).append('\n');
                for (int i = 0; i < n; i++) { if (i > 0) out.append(' '); out.append(v[i]); }
                System.out.print(out.append('\n'));
            }
        }
    """),
    "javascript": src(r"""
        const t = require("fs").readFileSync(0, "utf8").split(/\s+/).filter(Boolean).map(Number);
        const n = t[0];
        const xs = t.slice(1, 1 + n).sort((a, b) => a - b);
        console.log(xs.reduce((a, b) => a + b, 0) + "\n" + xs.join(" "));
    """),
    "typescript": src(r"""
        import { readFileSync } from "fs";
        const t: number[] = readFileSync(0, "utf8").split(/\s+/).filter(Boolean).map(Number);
        const n: number = t[0];
        const xs: number[] = t.slice(1, 1 + n).sort((a: number, b: number) => a - b);
        console.log(xs.reduce((a: number, b: number) => a + b, 0) + "\n" + xs.join(" "));
    """),
    "go": src("""
        package main

        import (
            "bufio"
            "os"
            "sort"
            "strconv"
        )

        func main() {
            in := bufio.NewScanner(os.Stdin)
            in.Buffer(make([]byte, 1<<20), 1<<20)
            in.Split(bufio.ScanWords)
            in.Scan()
            n, _ := strconv.Atoi(in.Text())
            v := make([]int64, n)
            var s int64
            for i := range v {
                in.Scan()
                v[i], _ = strconv.ParseInt(in.Text(), 10, 64)
                s += v[i]
            }
            sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
            out := bufio.NewWriter(os.Stdout)
            defer out.Flush()
            out.WriteString(strconv.FormatInt(s, 10) + "\\n")
            for i, x := range v {
                if i > 0 {
                    out.WriteByte(' ')
                }
                out.WriteString(strconv.FormatInt(x, 10))
            }
            out.WriteByte('\\n')
        }
    """),
    "rust": src("""
        use std::io::{Read, Write};
        fn main() {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).unwrap();
            let mut it = s.split_whitespace().map(|t| t.parse::<i64>().unwrap());
            let n = it.next().unwrap() as usize;
            let mut v: Vec<i64> = it.take(n).collect();
            v.sort();
            let sum: i64 = v.iter().sum();
            let line: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            let mut out = std::io::BufWriter::new(std::io::stdout());
            writeln!(out, "{}\\n{}", sum, line.join(" ")).unwrap();
        }
    """),
}


def sum_and_sort_case(numbers: Sequence[int], name: str) -> rustbox.TestCase:
    stdin = f"{len(numbers)}\n{' '.join(map(str, numbers))}\n"
    expected = f"{sum(numbers)}\n{' '.join(map(str, sorted(numbers)))}\n"
    return rustbox.TestCase(stdin=stdin, expected=expected, name=name)


def sum_and_sort_cases() -> list[rustbox.TestCase]:
    rng = random.Random(20240601)
    return [
        sum_and_sort_case([3, 1, 2], "small"),
        sum_and_sort_case([-5], "one"),
        sum_and_sort_case([], "empty"),
        # The sum overflows 32 bits.
        sum_and_sort_case([2_000_000_000, 2_000_000_000, -7, 1_999_999_999], "wide"),
        sum_and_sort_case(
            [rng.randint(-1_000_000_000, 1_000_000_000) for _ in range(100_000)], "large"
        ),
    ]


def test_every_language_has_every_source() -> None:
    for table in (HELLO, WRONG, RUNTIME_ERROR, INFINITE_LOOP, MEMORY_HOG, SUM_AND_SORT):
        assert set(table) == set(LANGUAGES)
    assert set(COMPILE_ERROR) == set(COMPILED)
    assert {name for name, lang in TABLE.languages.items() if lang.compile} == set(COMPILED)


# -- the per-language matrix --------------------------------------------------------


@matrix()
async def test_hello_world(language: str) -> None:
    report = await judge(
        language,
        HELLO[language],
        [rustbox.TestCase(name="free"), rustbox.TestCase(expected="hello world\n", name="checked")],
    )
    assert report.verdict is rustbox.Verdict.AC, show(report)
    assert report.language == language
    assert report.verdict_provenance == "all 2 cases accepted (1 checked against expected output)"
    free, checked = report.cases
    # No expected output: a clean run is accepted without a checker.
    assert free.verdict is rustbox.Verdict.AC and free.checker is None
    assert free.stdout == b"hello world\n"
    assert checked.verdict is rustbox.Verdict.AC
    assert checked.checker is not None and checked.checker.startswith("tokens: ")
    assert [c.index for c in report.cases] == [0, 1]
    assert [c.name for c in report.cases] == ["free", "checked"]
    if language in COMPILED:
        assert report.compile is not None and report.compile.ok
    else:
        assert report.compile is None


@matrix()
async def test_wrong_answer(language: str) -> None:
    report = await judge(
        language,
        WRONG[language],
        [
            rustbox.TestCase(stdin="5 5\n", expected="0\n"),  # a - b happens to be right here
            rustbox.TestCase(stdin="3 4\n", expected="7\n"),
        ],
    )
    assert report.verdict is rustbox.Verdict.WA, show(report)
    assert [c.verdict for c in report.cases] == [rustbox.Verdict.AC, rustbox.Verdict.WA]
    message = "tokens: token 1: expected '7', got '-1'"
    assert report.cases[1].checker == message
    # The provenance says which case, which checker, and what differed.
    assert report.verdict_provenance == f"case 2: {message}"
    assert report.cases[1].status is rustbox.Status.OK  # the program ran fine; its answer is wrong


@matrix(COMPILED)
async def test_compile_error(language: str) -> None:
    code, complaint = COMPILE_ERROR[language]
    report = await judge(language, code, [rustbox.TestCase(expected="anything\n")])
    assert report.verdict is rustbox.Verdict.CE, show(report)
    assert report.cases == ()  # nothing ran
    assert report.compile is not None and not report.compile.ok
    assert report.compile.result.status is rustbox.Status.RE
    assert re.search(complaint, report.compile.stderr.decode(errors="replace")), show(report)
    assert report.verdict_provenance == (
        f"compile step RE (exit {report.compile.result.exit_code})"
    )


@matrix()
async def test_runtime_error(language: str) -> None:
    code, exit_code, complaint = RUNTIME_ERROR[language]
    report = await judge(language, code, [rustbox.TestCase(stdin="0\n", expected="never\n")])
    assert report.verdict is rustbox.Verdict.RE, show(report)
    (case,) = report.cases
    assert case.status is rustbox.Status.RE
    assert case.result.exit_code == exit_code, show(report)
    assert complaint.encode() in case.stderr, show(report)
    assert case.checker is None  # a failed run is never handed to the checker
    assert report.verdict_provenance == "case 1: run status RE"


@matrix()
async def test_infinite_loop(language: str) -> None:
    report = await judge(
        language, INFINITE_LOOP[language], [rustbox.TestCase(limits=quick_limits(language))]
    )
    assert report.verdict is rustbox.Verdict.TLE, show(report)
    (case,) = report.cases
    assert case.result.tle == "cpu", show(report)
    assert case.cpu_time >= 0.9
    assert case.wall_time < 5
    assert report.verdict_provenance == "case 1: run status TLE (cpu time)"


@matrix()
async def test_memory_hog(language: str) -> None:
    report = await judge(language, MEMORY_HOG[language])
    assert report.verdict is rustbox.Verdict.MLE, show(report)
    (case,) = report.cases
    limit = TABLE.get(language).run_limits.memory
    assert limit in (256 * MiB, 512 * MiB)
    assert case.memory_peak > limit // 2, show(report)
    cgroup = case.result.evidence.cgroup
    assert cgroup is not None and cgroup.memory_limit == limit
    if language == "java":
        # The JVM's heap is sized from the limit (-Xmx = 75%), so its own
        # OutOfMemoryError comes before the cgroup's OOM killer; the judge maps it.
        assert cgroup.oom_kills >= 1 or case.checker == "the runtime reported running out of memory"
    else:
        assert cgroup.oom_kills >= 1


@matrix()
async def test_algorithm_problem(language: str) -> None:
    tests = sum_and_sort_cases()
    report = await judge(language, SUM_AND_SORT[language], tests)
    assert report.verdict is rustbox.Verdict.AC, show(report)
    assert [c.name for c in report.cases] == [t.name for t in tests]
    assert all(c.verdict is rustbox.Verdict.AC for c in report.cases), show(report)
    assert report.verdict_provenance == "all 5 cases accepted (5 checked against expected output)"
    large = report.cases[-1]
    assert len(large.stdout) > 500_000  # the large case really printed 100000 numbers


# -- language details ---------------------------------------------------------------


@asyncio_only
async def test_abort_and_uncaught_cpp_exception_are_sig() -> None:
    abort = await judge("c", "#include <stdlib.h>\nint main(void) { abort(); }\n")
    assert abort.verdict is rustbox.Verdict.SIG, show(abort)
    assert abort.cases[0].result.signal == 6
    # An uncaught C++ exception ends in std::terminate -> abort(): SIG as well.
    throw = await judge(
        "cpp", '#include <stdexcept>\nint main() { throw std::runtime_error("boom"); }\n'
    )
    assert throw.verdict is rustbox.Verdict.SIG, show(throw)
    assert throw.cases[0].result.signal == 6
    assert b"boom" in throw.cases[0].stderr
    assert throw.verdict_provenance == "case 1: run status SIG"


@asyncio_only
async def test_python_has_no_compile_step_so_a_syntax_error_is_re() -> None:
    report = await judge("python", "def broken(:\n    pass\n")
    assert report.compile is None
    assert report.verdict is rustbox.Verdict.RE, show(report)
    assert b"SyntaxError" in report.cases[0].stderr


@asyncio_only
async def test_typescript_type_error_still_runs() -> None:
    # esbuild strips types without checking them (fast, no tsc in the sandbox), so a
    # type error is not a compile error: the program runs, as JavaScript would.
    report = await judge(
        "ts",
        'const n: number = "not a number";\nconsole.log(n);\n',
        [rustbox.TestCase(expected="not a number\n")],
    )
    assert report.verdict is rustbox.Verdict.AC, show(report)
    assert report.compile is not None and report.compile.ok


@asyncio_only
async def test_java_class_name_comes_from_the_source() -> None:
    async with rustbox.Supervisor() as sv:
        # `public class Foo` must live in Foo.java (javac refuses it in Main.java), and
        # the run starts class Foo.
        foo = await sv.judge(
            rustbox.Submission("java", HELLO["java"].replace("class Main", "class Foo")),
            [rustbox.TestCase(expected="hello world\n")],
        )
        assert foo.verdict is rustbox.Verdict.AC, show(foo)
        modifiers = await sv.judge(
            rustbox.Submission(
                "java", HELLO["java"].replace("public class Main", "public final class Solution")
            ),
            [rustbox.TestCase(expected="hello world\n")],
        )
        assert modifiers.verdict is rustbox.Verdict.AC, show(modifiers)
        # No public class: the file is Main.java and the class Main.
        default = await sv.judge(
            rustbox.Submission("java", HELLO["java"].replace("public class Main", "class Main")),
            [rustbox.TestCase(expected="hello world\n")],
        )
        assert default.verdict is rustbox.Verdict.AC, show(default)


@asyncio_only
async def test_java_heap_can_use_the_judge_memory_limit() -> None:
    # Java's judge limit is 512 MiB; a solution holding 256 MiB of arrays is within it.
    code = MEMORY_HOG["java"].replace("new byte[1024][]", "new byte[256][]")
    report = await judge("java", code)
    assert report.verdict is rustbox.Verdict.AC, show(report)


@asyncio_only
async def test_java_class_name_with_a_dollar() -> None:
    # `$` is legal in a Java identifier; the class name must reach javac verbatim.
    code = HELLO["java"].replace("class Main", "class Solution$1")
    report = await judge("java", code, [rustbox.TestCase(expected="hello world\n")])
    assert report.verdict is rustbox.Verdict.AC, show(report)


@asyncio_only
async def test_java_public_class_in_a_comment_does_not_rename_the_file() -> None:
    code = "// public class Old was the first attempt\n" + HELLO["java"]
    report = await judge("java", code, [rustbox.TestCase(expected="hello world\n")])
    assert report.verdict is rustbox.Verdict.AC, show(report)


@asyncio_only
async def test_judge_profile_rlimits_seen_by_a_c_program() -> None:
    code = src(r"""
        #include <stdio.h>
        #include <sys/resource.h>
        static void show(const char *name, int which) {
            struct rlimit l;
            getrlimit(which, &l);
            printf("%s %lld %lld\n", name, (long long)l.rlim_cur, (long long)l.rlim_max);
        }
        int main(void) {
            show("FSIZE", RLIMIT_FSIZE);
            show("NPROC", RLIMIT_NPROC);
            show("NOFILE", RLIMIT_NOFILE);
            show("CORE", RLIMIT_CORE);
        }
    """)
    judged = await judge("c", code)
    assert judged.verdict is rustbox.Verdict.AC, show(judged)
    assert judged.cases[0].stdout.decode().splitlines() == [
        f"FSIZE {MiB} {MiB}",
        "NPROC 8 8",
        "NOFILE 32 32",
        "CORE 0 0",
    ]
    executor = await judge("c", code, profile="executor")
    assert executor.verdict is rustbox.Verdict.AC, show(executor)
    assert executor.cases[0].stdout.decode().splitlines() == [
        f"FSIZE {64 * MiB} {64 * MiB}",
        "NPROC 64 64",
        "NOFILE 256 256",
        "CORE 0 0",
    ]


@asyncio_only
async def test_file_over_the_judge_file_size_limit_is_ole() -> None:
    # RLIMIT_FSIZE 1 MiB: writing 2 MiB to a file raises SIGXFSZ (FSE), which the judge
    # reports as OLE.
    code = src(r"""
        #include <stdio.h>
        int main(void) {
            static char block[4096];
            FILE *f = fopen("big.txt", "w");
            for (int i = 0; i < 512; i++) fwrite(block, 1, sizeof block, f);
            fclose(f);
            puts("wrote it");
        }
    """)
    report = await judge("c", code)
    assert report.verdict is rustbox.Verdict.OLE, show(report)
    assert report.cases[0].status is rustbox.Status.FSE


@asyncio_only
async def test_compile_resources_never_appear_in_the_run() -> None:
    code = src(r"""
        #include <bits/stdc++.h>
        using namespace std;
        int main() {
            map<string, vector<int>> m;
            m["x"] = {3, 1, 2};
            sort(m["x"].begin(), m["x"].end());
            cout << m["x"][0] << "\n";
        }
    """)
    report = await judge("cpp", code, [rustbox.TestCase(expected="1\n")] * 3)
    assert report.verdict is rustbox.Verdict.AC, show(report)
    assert report.compile is not None
    compiled = report.compile.result
    # Compiling <bits/stdc++.h> takes real cpu and memory...
    assert compiled.cpu_time > 0.2
    assert compiled.memory_peak > 20 * MiB
    # ... none of which shows up in any case: each runs with a cgroup, /box and /tmp
    # of its own (possibly in the slot that compiled, which is fine: fresh per run).
    for case in report.cases:
        assert case.cpu_time < 0.05, show(report)
        assert case.memory_peak < 16 * MiB, show(report)
        cgroup = case.result.evidence.cgroup
        assert cgroup is not None and cgroup.cpu_usage < 0.05


# -- checkers -------------------------------------------------------------------

ECHO = "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n"


async def echo_judge(
    checker: str | rustbox.CustomChecker, pairs: Sequence[tuple[str, str]]
) -> rustbox.JudgeReport:
    """The submission prints its input: each case's stdin is the output to check."""
    tests = [rustbox.TestCase(stdin=out, expected=exp) for out, exp in pairs]
    return await judge("python", ECHO, tests, checker=checker)


def verdicts(report: rustbox.JudgeReport) -> list[str]:
    return [case.verdict.value for case in report.cases]


@asyncio_only
async def test_exact_checker() -> None:
    report = await echo_judge(
        "exact",
        [
            ("1 2\n", "1 2\n"),  # identical
            ("1 2", "1 2\n"),  # a missing final newline is forgiven
            ("1 2  \n", "1 2\n"),  # trailing spaces are not
            ("1  2\n", "1 2\n"),  # nor inner spacing
            ("1 2\n3\n", "1 2\n"),  # nor an extra line
        ],
    )
    assert verdicts(report) == ["AC", "AC", "WA", "WA", "WA"], show(report)
    assert report.cases[2].checker == "exact: line 1 differs: expected '1 2', got '1 2  '"
    assert report.cases[4].checker == "exact: expected 1 lines, got 2"
    assert report.verdict is rustbox.Verdict.WA
    assert report.verdict_provenance.startswith("case 3: exact: line 1 differs")


@asyncio_only
async def test_token_checker_is_the_default() -> None:
    pairs = [
        ("1   2\n\n\n", "1 2\n"),  # spacing and blank lines do not matter
        ("1\n2", "1 2"),  # nor where the line breaks fall
        ("  1 2 \t\n", "1 2\n"),
        ("1 3\n", "1 2\n"),  # a different token does
        ("1 2 3\n", "1 2\n"),  # and so does an extra one
    ]
    for checker in ("tokens", None):
        tests = [rustbox.TestCase(stdin=out, expected=exp) for out, exp in pairs]
        report = await judge("python", ECHO, tests, checker=checker)
        assert verdicts(report) == ["AC", "AC", "AC", "WA", "WA"], show(report)
        assert report.cases[3].checker == "tokens: token 2: expected '2', got '3'"
        assert report.cases[4].checker == "tokens: expected 2 tokens, got 3"


@asyncio_only
async def test_float_checker() -> None:
    report = await echo_judge(
        "float:1e-6",
        [
            ("0.33333333\n", "0.3333333\n"),  # 3e-8 apart: within 1e-6
            ("1e-7 2.0\n", "0 2\n"),  # absolute tolerance near zero; 2.0 == 2
            ("1000000.5\n", "1000000.0\n"),  # relative tolerance: 5e-7 of the value
            ("0.34\n", "0.3333333\n"),  # 0.0067 apart: wrong
            ("abc\n", "0.5\n"),  # not a number
            ("0.5 0.5\n", "0.5\n"),  # an extra token
        ],
    )
    assert verdicts(report) == ["AC", "AC", "AC", "WA", "WA", "WA"], show(report)
    assert report.cases[3].checker == "float: token 1: 0.34 is not within 1e-06 of 0.3333333"
    assert report.cases[0].checker == "float: 1 tokens match within 1e-06"


CUSTOM_CHECKER = src("""
    import os, sys
    if os.getcwd() != "/box":
        print("checker cwd is", os.getcwd())
        sys.exit(3)
    numbers = [int(t) for t in open("input").read().split()]
    expected = open("expected").read().split()
    output = open("output").read().split()
    # Any spelling of the right number is accepted, e.g. "007" for 7.
    if len(output) == 1 and output[0].lstrip("-").isdigit() and int(output[0]) == sum(numbers):
        assert int(expected[0]) == sum(numbers)
        print("ok, the sum is", int(output[0]))
        sys.exit(0)
    print("wanted", sum(numbers), "got", output)
    sys.exit(1)
""")


def custom(source: str) -> rustbox.CustomChecker:
    return rustbox.CustomChecker(
        ("/usr/bin/python3", "checker.py"), (("checker.py", source.encode()),)
    )


@asyncio_only
async def test_custom_checker() -> None:
    # The submission prints the sum with leading zeros: the token checker would say WA.
    code = 'a = sum(map(int, input().split()))\nprint(f"{a:03d}" if a != 5 else 6)\n'
    tests = [
        rustbox.TestCase(stdin="3 4\n", expected="7\n"),
        rustbox.TestCase(stdin="10 20 30\n", expected="60\n"),
        rustbox.TestCase(stdin="2 3\n", expected="5\n"),
    ]
    report = await judge("python", code, tests, checker=custom(CUSTOM_CHECKER))
    assert verdicts(report) == ["AC", "AC", "WA"], show(report)
    assert report.cases[0].checker == "custom checker accepted: ok, the sum is 7"
    assert report.cases[2].checker == "custom checker rejected: wanted 5 got ['6']"
    assert report.verdict is rustbox.Verdict.WA
    assert report.verdict_provenance == "case 3: custom checker rejected: wanted 5 got ['6']"
    tokens = await judge("python", code, tests[:1])
    assert tokens.verdict is rustbox.Verdict.WA  # "007" is not the token "7"


@asyncio_only
@pytest.mark.parametrize(
    "checker_source",
    [
        pytest.param("import sys\nprint('cannot judge this')\nsys.exit(2)\n", id="exit-2"),
        # An uncaught exception is a crash, even though Python exits 1 for it.
        pytest.param("raise RuntimeError('checker bug')\n", id="exception"),
        pytest.param("import os\nos.abort()\n", id="signal"),
    ],
)
async def test_crashing_custom_checker_is_ie_not_wa(checker_source: str) -> None:
    report = await judge(
        "python",
        "print(7)\n",
        [rustbox.TestCase(stdin="", expected="7\n")],
        checker=custom(checker_source),
    )
    assert report.verdict is rustbox.Verdict.IE, show(report)
    (case,) = report.cases
    assert case.verdict is rustbox.Verdict.IE
    assert case.status is rustbox.Status.OK  # the submission itself was fine
    assert case.checker is not None and case.checker.startswith("custom checker failed")
    assert report.verdict_provenance.startswith("case 1: custom checker failed")


# -- judging options ----------------------------------------------------------------

STOPPER = src("""
    import sys, time
    what = input()
    if what == "fail":
        sys.exit(1)
    if what == "slow":
        time.sleep(20)
    print(what)
""")


@asyncio_only
async def test_stop_on_first_failure() -> None:
    stdins = ["ok", "fail", "ok", "ok", "slow", "slow"]
    tests = [rustbox.TestCase(stdin=s + "\n") for s in stdins]
    async with rustbox.Supervisor(max_concurrency=2) as sv:
        started = time.monotonic()
        report = await sv.judge(
            rustbox.Submission("python", STOPPER), tests, stop_on_first_failure=True
        )
        elapsed = time.monotonic() - started
        assert report.verdict is rustbox.Verdict.RE, show(report)
        # The cases after the first failure are not in the report, and the slow ones
        # (20 s each) were never waited for.
        assert [c.index for c in report.cases] == [0, 1], show(report)
        assert report.verdict_provenance == "case 2: run status RE"
        assert elapsed < 10

        # Without it, every case runs (the slow ones with a short wall limit here).
        short = attrs.evolve(TABLE.get("python").run_limits, cpu_time=1, wall_time=1)
        report = await sv.judge(rustbox.Submission("python", STOPPER), tests, limits=short)
        assert verdicts(report) == ["AC", "RE", "AC", "AC", "TLE", "TLE"], show(report)
        assert report.cases[4].result.tle == "wall"
        assert report.verdict_provenance == "case 2: run status RE"


@asyncio_only
async def test_executor_profile_relaxes_the_limits() -> None:
    code = MEMORY_HOG["python"]  # 1 GiB, touched
    relaxed = await judge("python", code, profile="executor")
    assert relaxed.verdict is rustbox.Verdict.AC, show(relaxed)
    assert relaxed.cases[0].memory_peak > 1000 * MiB
    strict = await judge("python", code, profile="judge")
    assert strict.verdict is rustbox.Verdict.MLE, show(strict)


#: Programs holding about 700 MiB on their runtime's heap.
BIG_HEAP = {
    "java": MEMORY_HOG["java"].replace("new byte[1024][]", "new byte[700][]"),
    "javascript": src("""
        const blocks = [];
        for (let i = 0; i < 700; i++) blocks.push(new Array(1 << 17).fill(i + 0.5));
        console.log(blocks.length);
    """),
}


@asyncio_only
@pytest.mark.parametrize("language", sorted(BIG_HEAP))
async def test_executor_profile_relaxes_the_runtime_heap_too(language: str) -> None:
    # The executor profile gives 2 GiB; a JVM or V8 heap capped by a fixed flag
    # (-XX:MaxRAM=512m, --max-old-space-size=448) would take that back.
    report = await judge(language, BIG_HEAP[language], profile="executor")
    assert report.verdict is rustbox.Verdict.AC, show(report)


@asyncio_only
async def test_judge_wide_limits_and_per_case_limits() -> None:
    code = "b = bytearray(100 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"
    small = attrs.evolve(TABLE.get("python").run_limits, memory=64 * MiB)
    big = attrs.evolve(TABLE.get("python").run_limits, memory=256 * MiB)
    report = await judge(
        "python",
        code,
        [rustbox.TestCase(name="own", limits=big), rustbox.TestCase(name="shared")],
        limits=small,
    )
    # `limits=` applies to the cases without limits of their own.
    assert verdicts(report) == ["AC", "MLE"], show(report)
    cgroup = report.cases[1].result.evidence.cgroup
    assert cgroup is not None and cgroup.memory_limit == 64 * MiB


@asyncio_only
async def test_cases_run_concurrently() -> None:
    # Each case prints when its sleep began and ended (the sandbox shares the host's clock).
    code = "import time\nstart = time.time()\ntime.sleep(0.3)\nprint(start, time.time())\n"
    async with rustbox.Supervisor(max_concurrency=4) as sv:
        started = time.monotonic()
        report = await sv.judge(rustbox.Submission("python", code), [rustbox.TestCase()] * 10)
        elapsed = time.monotonic() - started
    assert report.verdict is rustbox.Verdict.AC, show(report)
    assert len(report.cases) == 10
    spans = [tuple(map(float, case.stdout.split())) for case in report.cases]
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    # Up to the supervisor's limit at once, never more.
    assert 3 <= most <= 4, spans
    # One at a time would take 3 s of sleeping alone; four at a time about 1 s.
    assert elapsed < 2.5


@asyncio_only
async def test_language_table_from_config() -> None:
    table = rustbox.LanguageTable.from_mapping(
        {
            "languages": {
                "python": {"run_limits": {"memory": "64M"}},
                "shell": {
                    "aliases": ["sh"],
                    "source": "main.sh",
                    "run": ["/bin/sh", "{source}"],
                    "run_limits": {"memory": "64M", "cpu_time": 1, "wall_time": 3},
                },
            }
        }
    )
    code = "b = bytearray(100 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"
    async with rustbox.Supervisor(languages=table) as sv:
        assert sv.languages is table
        python = await sv.judge(rustbox.Submission("py", code))
        assert python.verdict is rustbox.Verdict.MLE, show(python)
        shell = await sv.judge(
            rustbox.Submission("sh", "read a b\necho $((a + b))\n"),
            [rustbox.TestCase(stdin="3 4\n", expected="7\n")],
        )
        assert shell.verdict is rustbox.Verdict.AC, show(shell)
        assert shell.language == "shell"


# -- the report ---------------------------------------------------------------------


@asyncio_only
async def test_report_to_dict_and_json() -> None:
    report = await judge("c", WRONG["c"], [rustbox.TestCase(stdin="3 4\n", expected="7\n")])
    assert report.verdict is rustbox.Verdict.WA
    data = json.loads(report.to_json())
    assert list(data) == list(report.to_dict())  # (tuples in the evidence become lists)
    # The Rust rustbox's field names, taken from the deciding case.
    assert data["verdict"] == "WA"
    assert data["language"] == "c"
    assert data["verdict_provenance"] == report.verdict_provenance
    assert data["status"] == "OK"
    assert data["exit_code"] == 0
    assert data["stdout"] == "-1\n"
    assert data["stderr"] == ""
    assert data["cpu_time"] == report.cases[0].cpu_time
    assert data["wall_time"] == report.cases[0].wall_time
    assert data["memory_peak"] == report.cases[0].memory_peak
    assert data["evidence_bundle"]["uid"] == report.cases[0].result.evidence.uid
    assert data["evidence_bundle"]["mode"] == "strict"
    assert data["compile"]["ok"] is True
    assert data["compile"]["status"] == "OK"
    assert "evidence_bundle" in data["compile"]
    (case,) = data["cases"]
    assert case["verdict"] == "WA"
    assert case["index"] == 0 and case["name"] == "1"
    assert case["checker"] == "tokens: token 1: expected '7', got '-1'"
    assert case["status"] == "OK" and case["stdout"] == "-1\n"
    assert "evidence_bundle" in case and "evidence" not in case
    pretty = report.to_json(indent=2)
    assert pretty.startswith('{\n  "language": "c"')

    ce = await judge("c", COMPILE_ERROR["c"][0])
    data = ce.to_dict()
    assert data["verdict"] == "CE"
    assert data["cases"] == []
    # With no case, the top-level figures are the compile step's.
    assert data["status"] == "RE"
    assert "undefined_name" in data["stderr"]
    assert data["compile"]["ok"] is False


# -- bad input ----------------------------------------------------------------------


@asyncio_only
async def test_bad_input_is_refused_before_anything_runs() -> None:
    hello = rustbox.TestCase(expected="hi\n")
    async with rustbox.Supervisor() as sv:
        with pytest.raises(rustbox.InvalidInput) as info:
            await sv.judge(rustbox.Submission("cobol", "DISPLAY 'HI'."), [hello])
        assert info.value.field == "language"
        assert "cobol" in str(info.value)
        for name in LANGUAGES:
            assert name in str(info.value)

        with pytest.raises(rustbox.InvalidInput) as info:
            await sv.judge(rustbox.Submission("python", "print('hi')"), [])
        assert info.value.field == "tests"

        with pytest.raises(rustbox.InvalidInput) as info:
            await sv.judge(rustbox.Submission("python", "print('hi')"), [hello], profile="turbo")
        assert info.value.field == "profile"

        with pytest.raises(rustbox.InvalidInput) as info:
            await sv.judge(rustbox.Submission("python", "print('hi')"), [hello], checker="float:x")
        assert info.value.field == "checker"

        with pytest.raises(rustbox.InvalidInput) as info:
            await sv.judge(rustbox.Submission("python", "print('hi')"), [b"hi\n"])  # type: ignore[list-item]
        assert info.value.field == "tests[0]"

        with pytest.raises(rustbox.InvalidInput) as info:
            await sv.judge(("python", "print('hi')"), [hello])  # type: ignore[arg-type]
        assert info.value.field == "submission"

        # The supervisor is still usable after the refusals.
        report = await sv.judge(rustbox.Submission("python", "print('hi')"), [hello])
        assert report.verdict is rustbox.Verdict.AC

    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.Submission("python", "")
    assert info.value.field == "code"
    with pytest.raises(rustbox.InvalidInput) as info:
        rustbox.Submission("python", "#" * (64 * 1024 + 1))
    assert info.value.field == "code"

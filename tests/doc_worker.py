"""Run by tests/test_doc_snippets.py: ONE documentation page's blocks in a process of its own.

Reads one JSON request per line on stdin, `{"id", "code", "page", "line"}`, runs the block in the
page's namespace (`exec`, or as a doctest when it holds `>>>` prompts) and answers one JSON line,
`{"stdout": what the block printed, "error": a traceback or doctest report, or null}`. The answers
go to the process's original stdout; file descriptor 1 is pointed at stderr, so output that
bypasses `sys.stdout` cannot corrupt them. A page gets the user's XLA settings (not the test
suite's) and its global JAX settings cannot leak into other tests.
"""

import contextlib
import doctest
import io
import json
import os
import re
import sys
import traceback

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def run(request: dict, namespace: dict) -> dict:
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            if re.search(r"^>>> ", request["code"], re.MULTILINE):
                parser = doctest.DocTestParser()
                test = parser.get_doctest(
                    request["code"], namespace, request["id"], request["page"], request["line"]
                )
                runner = doctest.DocTestRunner(optionflags=FLAGS)
                report: list[str] = []
                runner.run(test, out=report.append, clear_globs=False)
                if runner.failures:
                    return {"stdout": stdout.getvalue(), "error": "".join(report)}
            else:
                exec(compile(request["code"], request["id"], "exec"), namespace)
    except BaseException:
        return {"stdout": stdout.getvalue(), "error": traceback.format_exc()}
    return {"stdout": stdout.getvalue(), "error": None}


def main() -> None:
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.__stdout__ = os.fdopen(1, "w", closefd=False)
    namespace = {"__name__": "__main__"}
    for line in sys.stdin:
        answers.write(json.dumps(run(json.loads(line), namespace)) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()

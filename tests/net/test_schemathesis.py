"""schemathesis against /openapi.json of a live server: every phase that works here
(coverage, fuzzing, stateful; the document has no explicit examples), every check.
No 500, every response matches the document, schema-valid requests are accepted and
schema-invalid ones refused."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import trio

from tests.conftest import Running


async def run_schemathesis(server: Running, max_examples: int) -> None:
    executable = shutil.which("schemathesis") or os.path.join(
        os.path.dirname(sys.executable), "schemathesis"
    )
    result = await trio.run_process(
        [
            executable,
            "run",
            f"http://127.0.0.1:{server.info.port}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "coverage,fuzzing,stateful",
            "--max-examples",
            str(max_examples),
            "--workers",
            "1",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert " passed" in output and "failed" not in output.split("SUMMARY")[-1], output[-3000:]


async def test_schemathesis(server: Running) -> None:
    with trio.fail_after(240):
        await run_schemathesis(server, 40)


@pytest.mark.slow
async def test_schemathesis_deep(server: Running) -> None:
    with trio.fail_after(1200):
        await run_schemathesis(server, 400)

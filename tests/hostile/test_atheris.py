"""libFuzzer (atheris) over the webhook envelope parser, coverage-guided.

The contract of :func:`~inbox_common.contracts.webhook.parse_envelope`: any bytes either
parse or raise ``InvalidEnvelope`` with one of three reasons, and what parses can be
summarised (``content``, ``preview``, ``reply_to``) without raising. libFuzzer runs in a
child process (it owns the process: it exits, and aborts on a crash) from a seed corpus of
Meta-shaped bodies, with a fixed seed and run count, so a run is repeatable; a crash fails
the test with the exact input. Run the file directly for a longer session:
``uv run python tests/hostile/test_atheris.py -max_total_time=600 <corpus-dir>``.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.hostile

RUNS = 15_000
HARNESS = Path(__file__)


def _seed_corpus(directory: Path) -> None:
    """Bodies of every shape the builders know, so mutations start from valid envelopes."""
    from inbox_sandbox import payloads

    wamid = "wamid.SEED"
    messages = [
        payloads.text_message("4915", wamid, "hello $where a.b", timestamp=1_700_000_000),
        payloads.media_message("image", "4915", wamid, caption="look", timestamp=1),
        payloads.media_message("audio", "4915", wamid, voice=True, timestamp=1),
        payloads.media_message("document", "4915", wamid, filename="a.pdf", timestamp=1),
        payloads.reaction_message("4915", wamid, "wamid.T", "👍", timestamp=1),
        payloads.reaction_message("4915", wamid, "wamid.T", None, timestamp=1),
        payloads.message("location", "4915", wamid, {"latitude": 1.5, "name": "x"}, timestamp=1),
        payloads.message("contacts", "4915", wamid, [{"name": {"formatted_name": "A"}}]),
        payloads.message(
            "interactive", "4915", wamid, {"type": "button_reply", "button_reply": {"title": "y"}}
        ),
        payloads.message("button", "4915", wamid, {"payload": "p", "text": "t"}),
        payloads.message("order", "4915", wamid, {"product_items": [{}]}),
        payloads.message("system", "4915", wamid, {"body": "changed"}),
        payloads.message("unsupported", "4915", wamid, None),
        payloads.message("weird", "4915", wamid, {"x": [1, None]}, reply_to="wamid.C"),
    ]
    bodies = [payloads.webhook("1065", messages=[m]) for m in messages]
    bodies.append(payloads.webhook("1065", statuses=[payloads.status(wamid, "failed", "4915")]))
    bodies.append(payloads.text_webhook("1065", "4915", "Ann", "hi"))
    directory.mkdir()
    for index, body in enumerate(bodies):
        (directory / f"seed-{index:02d}.json").write_bytes(orjson.dumps(body))


# Tokens libFuzzer splices into inputs: Meta's field names and JSON's own punctuation.
DICTIONARY = [
    *('"object"', '"entry"', '"changes"', '"field"', '"value"', '"metadata"', '"messages"'),
    *('"statuses"', '"contacts"', '"errors"', '"phone_number_id"', '"id"', '"from"'),
    *('"timestamp"', '"type"', '"text"', '"body"', '"image"', '"reaction"', '"emoji"'),
    *('"context"', '"interactive"', '"button_reply"', '"caption"', '"unsupported"', '"code"'),
    *("{", "}", "[", "]", ":", ",", "null", "true", "false", '""', "-0", "1e309"),
    *("18446744073709551616", "\\u0000", "\\ud800"),
]


def test_libfuzzer_finds_no_crash_in_the_envelope_parser(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris ships wheels for Linux x86_64 only")
    corpus = tmp_path / "corpus"
    _seed_corpus(corpus)
    dictionary = tmp_path / "json.dict"
    dictionary.write_text("".join(f"{orjson.dumps(token).decode()}\n" for token in DICTIONARY))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable,
        str(HARNESS),
        f"-runs={RUNS}",
        "-seed=1",
        "-max_len=8192",
        "-max_total_time=40",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/",
        f"-dict={dictionary}",
        str(corpus),
    ]
    result = subprocess.run(command, capture_output=True, timeout=90, check=False, cwd=tmp_path)
    output = result.stderr.decode(errors="replace")
    crashes = {path.name: path.read_bytes() for path in artifacts.iterdir()}
    assert result.returncode == 0, f"crash inputs: {crashes!r}\n{output[-4000:]}"
    # -max_total_time guards a slow machine; the run count is what a normal run reaches.
    assert re.search(r"^Done \d+ runs", output, re.MULTILINE), output[-2000:]


# --- the harness, run in the child process --------------------------------------------------


def _harness(atheris: Any) -> None:
    with atheris.instrument_imports():
        from inbox_api import previews
        from inbox_common.contracts import webhook

    reasons = {"invalid_json", "not_an_object", "schema"}

    def one_input(data: bytes) -> None:
        try:
            envelope = webhook.parse_envelope(data)
        except webhook.InvalidEnvelope as exc:
            if exc.reason not in reasons:
                raise AssertionError(f"unknown reason {exc.reason!r}") from exc
            return
        for change in webhook.iter_changes(envelope):
            for message in change.messages:
                assert isinstance(message.content, dict)
                assert len(previews.preview(message)) <= previews.PREVIEW_MAX_CHARS
                assert message.reply_to is None or isinstance(message.reply_to, str)
                assert isinstance(message.is_reaction_removal, bool)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _harness(importlib.import_module("atheris"))  # untyped, and absent off Linux x86_64

"""SandboxSettings: Meta's defaults, and a start that stops naming each bad variable."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest

from inbox_common.local.ports import free_port
from inbox_common.settings import load_settings
from inbox_sandbox.settings import SandboxSettings
from inbox_testkit.polling import wait_until

_VARIABLES = (
    "WHATSAPP_SANDBOX_PORT", "SANDBOX_WEBHOOK_URL", "WHATSAPP_WEBHOOK_SECRET", "SANDBOX_NUMBERS",
    "SANDBOX_THROUGHPUT", "SANDBOX_PAIR_INTERVAL_SECONDS", "SANDBOX_PAIR_BURST",
    "SANDBOX_STATUS_DELAYS_MS", "SANDBOX_WEBHOOK_DUPLICATES", "SANDBOX_WEBHOOK_SHUFFLE",
    "SANDBOX_READ",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_defaults_are_meta_s_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_WEBHOOK_SECRET", "first, second")
    settings = load_settings(SandboxSettings)
    assert settings.http_port == 8090
    assert settings.sandbox_webhook_url == "http://127.0.0.1:8080/webhooks/whatsapp"
    assert settings.sandbox_throughput == 80
    assert settings.sandbox_pair_interval_seconds == 6.0
    assert settings.sandbox_pair_burst == 45
    assert settings.status_delays == (0.03, 0.12, 0.4)
    assert settings.sandbox_webhook_duplicates == 0
    assert settings.sandbox_webhook_shuffle is False
    assert settings.sandbox_read is True
    # During a rotation the first secret signs.
    assert settings.signing_secret == b"first"
    [number] = settings.numbers
    assert number.phone_number_id == "100000000000001"
    assert number.accepts("dev-sandbox-token")
    assert number.waba_id == "100000000000009"
    assert number.display_phone_number == "+1 555 010 0001"
    assert number.webhook_number == "15550100001"
    # Tokens and the app secret stay out of reprs (and so out of logs).
    assert "dev-sandbox-token" not in repr(settings)
    assert "dev-sandbox-token" not in repr(number)
    assert "first" not in repr(settings)


def test_several_numbers_parse_with_optional_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("SANDBOX_NUMBERS", "11:a:22:+62 811 0001, 33:b")
    monkeypatch.setenv("SANDBOX_THROUGHPUT", "500")
    first, second = load_settings(SandboxSettings).numbers
    assert (first.phone_number_id, first.waba_id, first.display_phone_number) == (
        "11", "22", "+62 811 0001",
    )  # fmt: skip
    assert second.phone_number_id == "33"
    assert second.throughput == first.throughput == 500
    assert second.throughput_level == "HIGH"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WHATSAPP_SANDBOX_PORT", "0"),
        ("SANDBOX_WEBHOOK_URL", "ftp://example.com/hook"),
        ("SANDBOX_NUMBERS", "100:secret-token-xyz:waba"),
        ("SANDBOX_NUMBERS", "100"),
        ("SANDBOX_NUMBERS", "100:a,100:b"),
        ("SANDBOX_THROUGHPUT", "1001"),
        ("SANDBOX_PAIR_INTERVAL_SECONDS", "0"),
        ("SANDBOX_PAIR_BURST", "many"),
        ("SANDBOX_STATUS_DELAYS_MS", "30,120"),
        ("SANDBOX_STATUS_DELAYS_MS", "400,120,30"),
        ("SANDBOX_WEBHOOK_DUPLICATES", "1.5"),
        ("SANDBOX_WEBHOOK_SHUFFLE", "sometimes"),
        ("SANDBOX_READ", "perhaps"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv("WHATSAPP_WEBHOOK_SECRET", "s")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(SandboxSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert variable in err
    assert "secret-token-xyz" not in err


def test_a_missing_or_blank_secret_is_named_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        load_settings(SandboxSettings)
    assert "WHATSAPP_WEBHOOK_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("WHATSAPP_WEBHOOK_SECRET", " , ")
    with pytest.raises(SystemExit):
        load_settings(SandboxSettings)
    assert "WHATSAPP_WEBHOOK_SECRET" in capsys.readouterr().err


@pytest.mark.slow
async def test_the_console_command_serves_the_sandbox() -> None:
    port = free_port()
    env = {
        **os.environ,
        "WHATSAPP_WEBHOOK_SECRET": "s",
        "WHATSAPP_SANDBOX_PORT": str(port),
        "HTTP_HOST": "127.0.0.1",
        "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/webhooks/whatsapp",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inbox_sandbox",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def serving() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/livez") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(serving, "the sandbox process to serve /livez", timeout=20)
            url = f"http://127.0.0.1:{port}/v23.0/100000000000001"
            headers = {"Authorization": "Bearer dev-sandbox-token"}
            async with session.get(url, headers=headers) as response:
                assert (await response.json())["id"] == "100000000000001"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0

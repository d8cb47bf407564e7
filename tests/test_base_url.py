"""base_url follows host and port unless it is set: the self links of `make run`'s feeds
point at the server that serves them, on whatever port it was given."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import config
from aggregator.config import public_url


@pytest.mark.parametrize(("host", "port", "url"), [
    ("127.0.0.1", 8080, "http://127.0.0.1:8080/"),
    ("0.0.0.0", 8080, "http://127.0.0.1:8080/"),  # a wildcard is no address to visit
    ("", 9000, "http://127.0.0.1:9000/"),
    ("::", 8080, "http://[::1]:8080/"),
    ("::1", 8080, "http://[::1]:8080/"),
    ("[::1]", 8080, "http://[::1]:8080/"),
    ("news.example.org", 80, "http://news.example.org/"),
    ("localhost", 8081, "http://localhost:8081/"),
])
def test_public_url_rule(host: str, port: int, url: str) -> None:
    assert public_url(host, port) == url


def test_base_url_follows_host_and_port_unless_set(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./aggregator.toml read by surprise
    assert config.load(env={}).base_url == "http://127.0.0.1:8080/"
    assert config.load(env={"AGGREGATOR_PORT": "9090"}).base_url == "http://127.0.0.1:9090/"
    toml = tmp_path / "aggregator.toml"
    toml.write_text('host = "0.0.0.0"\nport = 8000\n', encoding="utf-8")
    assert config.load(toml, env={}).base_url == "http://127.0.0.1:8000/"
    assert config.load(toml, env={}, flags={"port": 8001}).base_url == "http://127.0.0.1:8001/"
    toml.write_text('port = 8000\nbase_url = "https://news.example.org/agg"\n',
                    encoding="utf-8")
    assert config.load(toml, env={}).base_url == "https://news.example.org/agg/"

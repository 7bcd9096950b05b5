"""scripts/load.py: the load generators' inputs (one URL, or the same path on several ports)."""

from __future__ import annotations

import pytest

from scripts.load import url_list, wrk_script

BODY = b'{"sepal_length": 5.1}'
HEADERS = {"X-API-Key": "k"}


def test_one_url_or_several_with_the_same_path():
    assert url_list("http://127.0.0.1:1/predict?wait=10") == ["http://127.0.0.1:1/predict?wait=10"]
    urls = ["http://127.0.0.1:1/predict?wait=10", "http://127.0.0.1:2/predict?wait=10"]
    assert url_list(urls) == urls


@pytest.mark.parametrize(
    "urls",
    [[], ["http://127.0.0.1:1/predict", "http://127.0.0.1:2/predict?wait=10"]],
)
def test_urls_that_differ_in_more_than_the_address_are_refused(urls):
    with pytest.raises(ValueError, match="same path"):
        url_list(urls)


def test_wrk_sends_the_body_and_headers_and_connects_each_thread_to_the_next_url():
    script = wrk_script(BODY, HEADERS, ["http://127.0.0.1:8001/p", "http://127.0.0.1:8002/p"])
    assert "wrk.body = [==[" + BODY.decode() + "]==]" in script
    assert 'wrk.headers["X-API-Key"] = "k"' in script
    assert 'local targets = {{"127.0.0.1", "8001"}, {"127.0.0.1", "8002"}}' in script
    assert "thread.addr = wrk.lookup(target[1], target[2])[1]" in script


def test_wrk_with_one_url_leaves_the_address_to_its_command_line():
    assert "setup" not in wrk_script(BODY, HEADERS, ["http://127.0.0.1:8001/p"])

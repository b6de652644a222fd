"""``make run`` prints a sign-in link to the demo user's My Credit page on every run (``creditline demo``):
its code is new each time, works once, and opens a portal session of the demo user's account."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.support.processes import cli, served

LINK = re.compile(r"^  (http://127\.0\.0\.1:8000/my-credit/\?code=[A-Za-z0-9_-]{43})$", re.M)


def exchange(url: str, code: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{url}/portal/session",
        data=json.dumps({"code": code}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_demo_prints_a_new_single_use_sign_in_link_on_every_run(tmp_path: Path) -> None:
    env = {**os.environ, "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/demo.sqlite3"}
    env.pop("CREDITLINE_PUBLIC_URL", None)
    assert cli(env, "migrate").returncode == 0

    first, again = cli(env, "demo"), cli(env, "demo")

    assert (first.returncode, again.returncode) == (0, 0)
    assert "My Credit of demo@creditline.local (sign-in link, works once, for 10 min):" in first.stdout
    assert again.stdout.startswith("demo data exists already")
    links = [LINK.findall(first.stdout), LINK.findall(again.stdout)]
    assert [len(found) for found in links] == [1, 1]
    codes = [parse_qs(urlsplit(found[0]).query)["code"][0] for found in links]
    assert codes[0] != codes[1]
    # Until the page is served, the line under the link exchanges the same code.
    assert (
        "  curl -s -X POST http://127.0.0.1:8000/portal/session -H 'content-type: application/json'"
        f' -d \'{{"code": "{codes[1]}"}}\'\n'
    ) in again.stdout

    with served(env) as (url, _):
        status, session = exchange(url, codes[1])
        assert status == 200, session
        reused, _ = exchange(url, codes[1])
        assert reused == 401
        request = urllib.request.Request(
            f"{url}/graphql",
            data=json.dumps({"query": "{ me { email } }"}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {session['token']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"data": {"me": {"email": "demo@creditline.local"}}}

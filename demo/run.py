"""What `make demo` and `make demo-check` run.

`make demo`: migrate, seed customers and a staff user, make sure Redis answers, start
daphne (the web site and its websocket) and `cq_runworker --concurrency 2`, print the URL,
and stop everything on Ctrl-C.

`make demo-check` (``--check``): the same on a fresh database, then the demo's scenario
without a browser, over HTTP: log in, generate a month's invoices, follow the run until it
stops at Initech's invoice, give Initech an address in the admin, retry the run from the
failed step, follow it to the end, download the archive and read the email; exits 0 only
when every result is right.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
USERNAME, PASSWORD = "admin", "cq-demo"  # what seed_demo creates
FAILING_CUSTOMER = "Initech"  # seeded without a billing address
FIXED_ADDRESS = "4120 Freidrich Lane\nAustin, TX"


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
    return result


def ensure_redis(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """REDIS_URL, by default 127.0.0.1:6379; if none answers, a private redis-server on a free port."""
    url = env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        return None
    if not shutil.which("redis-server"):
        sys.exit(f"Redis does not answer at {url} and redis-server is not installed.\n"
                 f"Install it (Debian/Ubuntu: sudo apt-get install redis-server), or set REDIS_URL to a Redis.")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    env["REDIS_URL"] = url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis_answers(url), 10, f"the redis-server started on port {port}")
    print(f"No Redis answered at 127.0.0.1:6379: started a private redis-server on port {port}.")
    return server


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=HERE, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


class Site:
    """Redis (if needed), daphne and a cq_runworker for the demo; stopped together."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.url = f"http://127.0.0.1:{port}/"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.redis = ensure_redis(env)
        manage(env, "migrate", "--verbosity", "0")
        self.credentials = manage(env, "seed_demo").strip()
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), "demo.asgi:application"],
            cwd=HERE, env=env))
        self.processes.append(subprocess.Popen(
            [sys.executable, "manage.py", "cq_runworker", "--concurrency", "2"], cwd=HERE, env=env))
        wait_for(self.answers, 30, f"daphne to answer on port {port}")

    def answers(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, process.args))} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(self.url + "admin/login/", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Stop gracefully (a worker finishes its task first); a second Ctrl-C kills at once."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        try:
            for process in self.processes:
                process.wait(30)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            for process in self.processes:
                process.kill()
                process.wait()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace) -> int:
    # Ctrl-C (even where a shell started us with SIGINT ignored) and SIGTERM both stop the demo.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    port = args.port if port_free(args.port) else free_port()
    site = Site(env, port)
    try:
        print(f"\ncq demo: open {site.url} and log in ({site.credentials.removeprefix('Log in as ')}).")
        print(f"The dashboard is at {site.url}cq/, the admin at {site.url}admin/. Ctrl-C stops everything.\n")
        while all(process.poll() is None for process in site.processes):
            time.sleep(0.5)
        print("A demo process exited; stopping the others.")
        return 1
    except KeyboardInterrupt:
        print("\nStopping the demo...")
        return 0
    finally:
        site.stop()


class Browser:
    """An HTTP client with cookies and Django's CSRF token, for the headless check."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[str, bytes]:
        with self.opener.open(urllib.parse.urljoin(self.base, path), timeout=10) as answer:
            return answer.url, answer.read()

    def post(self, path: str, fields: dict[str, str]) -> tuple[str, bytes]:
        token = next(c.value for c in self.cookies if c.name == "csrftoken")
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(urllib.parse.urljoin(self.base, path), data=data,
                                         headers={"Referer": self.base})
        with self.opener.open(request, timeout=10) as answer:
            return answer.url, answer.read()

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = next(c.value for c in self.cookies if c.name == "csrftoken")
        request = urllib.request.Request(urllib.parse.urljoin(self.base, path), data=json.dumps(body).encode(),
                                         headers={"Referer": self.base, "X-CSRFToken": token,
                                                  "Content-Type": "application/json"})
        with self.opener.open(request, timeout=10) as answer:
            return json.loads(answer.read())


def check(args: argparse.Namespace) -> int:
    """The demo's scenario, headless, on a fresh database: exit 0 only if every result is right."""
    scratch = Path(tempfile.mkdtemp(prefix="cq-demo-check-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEMO_SQLITE_PATH": str(scratch / "db.sqlite3"),
           "DEMO_MEDIA_ROOT": str(scratch / "media"), "DEMO_RENDER_PACE": "0.05", "DEMO_REMINDER_AFTER": "2"}
    if os.environ.get("DATABASE_URL"):
        sys.exit("demo-check makes a fresh SQLite database of its own: unset DATABASE_URL.")
    site = Site(env, free_port())
    try:
        browser = Browser(site.url)
        browser.get("admin/login/")
        browser.post("admin/login/", {"username": USERNAME, "password": PASSWORD, "next": "/"})
        _, page = browser.get("/")
        month = re.search(rb'<option value="([0-9-]+)"', page)
        assert month, "the invoices page offers no month"
        run_url, _ = browser.post("runs/", {"month": month.group(1).decode()})
        print(f"Generating the invoices of {month.group(1).decode()[:7]}: {run_url}")
        stopped = wait_for(lambda: _finished(browser, run_url), 120, "the run to stop at the failed invoice")
        task_api = "cq/api/" + stopped["task_url"].removeprefix("/cq/")
        before = _render_starts(browser, task_api)
        _give_an_address(browser, FAILING_CUSTOMER)
        browser.post_json(stopped["retry_url"], {})
        state = wait_for(lambda: _finished(browser, run_url), 120, "the retried run to finish")
        after = _render_starts(browser, task_api)
        _, archive = browser.get(state["archive_url"])
        names = zipfile.ZipFile(BytesIO(archive)).namelist()
        outbox = Path(env["DEMO_MEDIA_ROOT"]) / "outbox"
        mail = "".join(path.read_text() for path in outbox.glob("*.log"))
        reminded = wait_for(lambda: _reminders(browser, run_url), 60, "the payment reminders")
        again = [pk for pk, started in after.items() if before.get(pk) != started]
        results = {
            f"the run stopped at {FAILING_CUSTOMER}'s invoice": stopped["status"] == "Incomplete"
            and stopped["failed"] == [FAILING_CUSTOMER] and stopped["archive_url"] is None,
            "Retry failed rendered only that invoice again": len(again) == 1 and set(after) == set(before)
            and before[again[0]] is not None and len(after) == len(state["invoices"]),
            "the run succeeded": state["status"] == "Success" and not state["failed"],
            "progress reached 100%": state["percent"] == 100,
            "every invoice is in the archive": sorted(names) == sorted(f"{i['number']}.html" for i in state["invoices"])
            and len(names) == len(state["invoices"]) > 0,
            "the office's email counts them all": f"{len(names)} invoices of" in mail,
            "the delayed reminders went out": reminded["reminder_status"] == "Success",
        }
        for what, ok in results.items():
            print(f"  {'ok ' if ok else 'NOT'} {what}")
        return 0 if all(results.values()) else 1
    finally:
        site.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _finished(browser: Browser, run_url: str) -> dict[str, Any] | None:
    state = json.loads(browser.get(run_url + "state/")[1])
    return state if state["done"] else None


def _render_starts(browser: Browser, task_api: str) -> dict[str, str | None]:
    """When each render_invoice task of the run last started, by task id (cq's JSON API)."""
    tree = json.loads(browser.get(task_api)[1])["tree"]
    return {task["id"]: task["started"] for task in tree if task["func_name"].endswith(".render_invoice")}


def _give_an_address(browser: Browser, name: str) -> None:
    """What a person does in the admin: open the customer and fill in its billing address."""
    _, page = browser.get(f"admin/invoices/customer/?q={urllib.parse.quote(name)}")
    change = re.search(rb'href="(/admin/invoices/customer/\d+/change/[^"]*)"', page)
    assert change, f"the admin lists no customer {name}"
    email = f"accounts@{name.split()[0].lower()}.example"  # as seed_demo made it
    browser.post(change.group(1).decode(), {"name": name, "email": email, "billing_address": FIXED_ADDRESS,
                                            "_save": "Save"})


def _reminders(browser: Browser, run_url: str) -> dict[str, Any] | None:
    state = json.loads(browser.get(run_url + "state/")[1])
    return state if state["reminder_status"] in {"Success", "Failure", "Lost", "Revoked"} else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="run the scenario headless and report (make demo-check)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    args = parser.parse_args()
    return check(args) if args.check else serve(args)


if __name__ == "__main__":
    sys.exit(main())

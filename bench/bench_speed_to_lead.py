"""Speed to lead: how long a lead POSTed to the webhook source takes to reach the dialer.

The daemon (`syncd run`, a real process) has a webhook source and a Jodo sink; the
Jodo simulator answers each request after ``--latency-ms``. Leads are POSTed one per
request, signed, at 1, 10 and 100 a second (``--rates``) for ``--seconds`` each; a
lead's time is from the moment its POST leaves to the moment the dialer answers the
push that carried it (both read off this process's monotonic clock: the simulator
runs in a thread here). One line per rate, for a script to read:

    speed to lead at 100/s: p50 0.21 s, p99 0.69 s, 1000 leads, lost 0

``lost``: leads answered 202 that the dialer had not taken 30 s after the last POST.

    python bench/bench_speed_to_lead.py [--rates 1,10,100] [--seconds 10] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from syncd.core.signing import sign  # noqa: E402
from syncd.simulators.faults import Faults  # noqa: E402
from syncd.simulators.jodo.api import JodoSimulator, create_app  # noqa: E402
from syncd.simulators.server import running  # noqa: E402

SECRET = "speed-to-lead-bench-secret"
KEY = re.compile(rb"SL-\d{7}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Arrivals:
    """ASGI middleware: when the dialer answered the push carrying each lead key."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def reading() -> Any:
            message = await receive()
            body.extend(message.get("body", b""))
            return message

        async def answering(message: Any) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 200:
                now = time.monotonic()
                with self.lock:
                    for key in KEY.findall(bytes(body)):
                        self.at.setdefault(key.decode(), now)
            await send(message)

        await self.app(scope, reading, answering)


def config(work: Path, jodo_url: str, hook_port: int) -> Path:
    path = work / "syncd.toml"
    path.write_text(
        f"""
[state]
path = "{work / "state.db"}"

[log]
level = "warning"
format = "json"

[health]
listen = "127.0.0.1:0"

[[sources]]
name = "form"
kind = "webhook"
listen = "127.0.0.1:{hook_port}"
path = "/leads"
secret = "env:BENCH_HOOK_SECRET"

[[sinks]]
name = "jodo"
kind = "jodo"
url = "{jodo_url}/CustomerWebServices/handleCustomerWS"
apikey = "test_org"
servicekey = "VoiceProcess"
updateparam = "crmuniquefield"
dial_format = "00"
batch_size = 100

[[routes]]
source = "form"
sink = "jodo"
default_region = "IN"
[routes.map]
key = "id"
phone = "phone"
first_name = "first"
""",
        encoding="utf-8",
    )
    return path


def post(client: httpx.Client, url: str, lead: dict[str, str]) -> tuple[float, int]:
    body = json.dumps(lead).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Syncd-Timestamp": stamp,
        "X-Syncd-Signature": sign(SECRET.encode(), stamp, body),
    }
    sent = time.monotonic()
    reply = client.post(url, content=body, headers=headers)
    return sent, reply.status_code


def one_rate(
    client: httpx.Client, url: str, arrivals: Arrivals, rate: float, seconds: float, first: int
) -> tuple[list[float], int, int]:
    """POST leads at ``rate`` a second; return (latencies, posted, lost)."""
    sent_at: dict[str, float] = {}
    count = max(int(rate * seconds), 1)
    began = time.monotonic()
    for i in range(count):
        due = began + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        key = f"SL-{first + i:07d}"
        lead = {"id": key, "phone": f"98{(first + i) % 10**8:08d}", "first": "Asha"}
        sent, status = post(client, url, lead)
        if status == 202:
            sent_at[key] = sent
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with arrivals.lock:
            if all(k in arrivals.at for k in sent_at):
                break
        time.sleep(0.05)
    with arrivals.lock:
        latencies = [arrivals.at[k] - t for k, t in sent_at.items() if k in arrivals.at]
    return latencies, len(sent_at), len(sent_at) - len(latencies)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,10,100", help="leads a second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate runs")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the dialer's answer")
    args = parser.parse_args(argv)
    sim = JodoSimulator(faults=Faults(latency_ms=args.latency_ms))
    arrivals = Arrivals(create_app(sim))
    hook_port = free_port()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="syncd-s2l-") as tmp, running(arrivals) as jodo:
        work = Path(tmp)
        env = {**os.environ, "BENCH_HOOK_SECRET": SECRET}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(config(work, jodo, hook_port))],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "daemon.log", "w"),  # closed with the process
            env=env,
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{hook_port}/leads"
        try:
            with httpx.Client(timeout=30) as client:
                until = time.monotonic() + 60
                while time.monotonic() < until:  # the daemon listening
                    try:
                        client.get(url)
                        break
                    except httpx.TransportError:
                        time.sleep(0.2)
                first = 0
                for rate in (float(r) for r in args.rates.split(",")):
                    latencies, posted, lost = one_rate(
                        client, url, arrivals, rate, args.seconds, first
                    )
                    first += posted + 1000
                    failures += lost
                    print(
                        f"speed to lead at {rate:g}/s: p50 {percentile(latencies, 50):.2f} s, "
                        f"p99 {percentile(latencies, 99):.2f} s, {posted} leads, lost {lost}",
                        flush=True,
                    )
        finally:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

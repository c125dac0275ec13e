"""Kannel baseline for Warta's SMS dispatch throughput benchmark.

Runs a throw-away Kannel (bearerbox + smsbox + fakesmsc from the Debian
``kannel``/``kannel-extras`` packages) on loopback and pushes MT messages
through smsbox's ``/cgi-bin/sendsms`` with aiohttp at bounded concurrency.

``measure_kannel`` is a coroutine (``asyncio.run(measure_kannel(...))``).

Counting: the run ends when bearerbox's admin ``/status.xml`` reports that the
fake SMSC has *sent* (written to fakesmsc's socket) every message that smsbox
accepted (HTTP 202).  fakesmsc is then stopped with SIGINT and its own
"N messages sent and M received" summary gives the end-to-end delivered
count, which is what ``messages_per_s`` is based on.

    python -m bench.kannel --messages 200000 --per-request 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from yarl import URL

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"  # shipped by kannel-extras
ADMIN_PASSWORD = "bench-admin"
USER, PASSWORD = "bench", "bench-pw"

# Every tuning choice is commented; "{...}" fields are filled in per run.
CONF_TEMPLATE = """\
group = core
admin-port = {admin_port}
admin-password = {admin_password}
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox_port}
box-allow-ip = "127.0.0.1"
log-file = "{logdir}/bearerbox.log"
# 2 = warnings and up: per-message info lines would cost more than routing.
log-level = 2
# No store-location => no message store (status.xml shows storesize -1), so
# no per-message disk I/O; the bench measures routing, not fsync.
# Unbounded bearerbox queues (the default, made explicit) so bearerbox never
# NACKs (-> HTTP 503) under burst; back-pressure comes from the client's
# bounded concurrency, since each 202 waits for bearerbox's ACK.
sms-outgoing-queue-limit = -1
sms-incoming-queue-limit = -1
# Failed messages are retried quickly and only a few times so a broken run
# ends instead of stalling; on the happy path nothing is ever resent.
sms-resend-freq = 1
sms-resend-retry = 3
# In-memory DLR storage, no database (no DLRs are requested anyway).
dlr-storage = internal

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox_port}
sendsms-port = {sendsms_port}
log-file = "{logdir}/smsbox.log"
log-level = 2
global-sender = 4600000
# max-pending-requests is deliberately left at its default: in Kannel 1.4.5
# it only bounds parallel MO sms-service (get-url/exec) requests, not sendsms
# MT traffic (512 vs 8192 measured no difference here).
# immediate-sendsms-reply stays false (default): the 202 is sent after
# bearerbox ACKs the message (for a multi-recipient request: the first one);
# "true" measured no faster and would weaken what a 202 means.

group = sendsms-user
username = {user}
password = {password}
user-allow-ip = "127.0.0.1"
# One SMS per recipient: the short text never needs splitting.
max-messages = 1

group = smsc
smsc = fake
smsc-id = fake
port = {smsc_port}
connect-allow-ip = "127.0.0.1"
# No "throughput" key => unlimited; the fake SMSC writes as fast as it can.
reconnect-delay = 1
"""


@dataclass
class KannelResult:
    messages: int  # end-to-end delivered (fakesmsc) or, failing that, smsc sent
    seconds: float  # first HTTP request -> bearerbox reports all accepted sent
    messages_per_s: float
    requested: int
    accepted: int  # recipients in sendsms requests answered with HTTP 202
    sent_by_bearerbox: int  # smsc "sent" counter from /status.xml
    received_by_fakesmsc: int | None  # fakesmsc's own final count
    http_errors: int
    recipients_per_request: int
    concurrency: int
    counted_by: str


class KannelError(RuntimeError):
    pass


def _check_binaries() -> None:
    missing = [p for p in (BEARERBOX, SMSBOX, FAKESMSC) if not os.access(p, os.X_OK)]
    if missing:
        raise KannelError(
            f"Kannel binaries not found: {', '.join(missing)}. "
            "Install them with: apt-get install kannel kannel-extras"
        )


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:  # all held open at once => distinct
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _tail(path: Path, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def _stop(proc: subprocess.Popen[bytes], sig: int, grace_s: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)


async def _status(session: aiohttp.ClientSession, admin_port: int) -> str:
    url = f"http://127.0.0.1:{admin_port}/status.xml?password={ADMIN_PASSWORD}"
    async with session.get(url) as resp:
        return await resp.text()


def _smsc_sent(status_xml: str) -> int:
    m = re.search(r"<smsc>.*?<sms>.*?<sent>(\d+)</sent>", status_xml, re.S)
    return int(m.group(1)) if m else 0


async def _wait_for(
    what: str,
    check: Callable[[], Awaitable[object]],
    procs: dict[str, subprocess.Popen[bytes]],
    logdir: Path,
    limit_s: float = 15.0,
) -> None:
    """Poll ``check()`` (bounded by limit_s) while making sure no box died."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise KannelError(
                    f"{name} exited ({proc.returncode}) waiting for {what}:\n"
                    + _tail(logdir / f"{name}.out")
                )
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            if await check():
                return
        await asyncio.sleep(0.1)
    raise KannelError(f"timed out after {limit_s}s waiting for {what}")


async def measure_kannel(
    total_messages: int = 200_000,
    recipients_per_request: int = 100,
    concurrency: int = 16,
    timeout_s: float = 300,
) -> KannelResult:
    """Coroutine: measure Kannel end-to-end MT throughput (see module doc)."""
    _check_binaries()
    if total_messages <= 0 or recipients_per_request <= 0 or concurrency <= 0:
        raise ValueError("total_messages, recipients_per_request, concurrency must be > 0")
    tmp = Path(tempfile.mkdtemp(prefix="warta-kannel-"))
    admin_port, smsbox_port, sendsms_port, smsc_port = _free_ports(4)
    conf = tmp / "kannel.conf"
    conf.write_text(
        CONF_TEMPLATE.format(
            admin_port=admin_port, smsbox_port=smsbox_port, sendsms_port=sendsms_port,
            smsc_port=smsc_port, logdir=tmp, admin_password=ADMIN_PASSWORD, user=USER,
            password=PASSWORD,
        )
    )  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    fake_out = tmp / "fakesmsc.out"

    def spawn(name: str, argv: list[str]) -> None:
        with open(tmp / f"{name}.out", "wb") as out:  # child keeps its own fd
            procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    timeout = aiohttp.ClientTimeout(total=min(30.0, timeout_s))
    connector = aiohttp.TCPConnector(limit=concurrency + 2, force_close=False)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            spawn("bearerbox", [BEARERBOX, "-v", "2", str(conf)])
            await _wait_for(
                "bearerbox admin port", lambda: _status(session, admin_port), procs, tmp
            )
            # -m 0: generate no MO traffic, just receive.  -v 1 hides the
            # per-message debug line but keeps the final info summary.
            fake_argv = f"{FAKESMSC} -v 1 -H 127.0.0.1 -r {smsc_port} -i 1 -m 0".split()
            spawn("fakesmsc", [*fake_argv, "100 200 text unused"])

            async def smsc_online() -> bool:
                return "<status>online" in await _status(session, admin_port)

            await _wait_for("fake smsc online", smsc_online, procs, tmp)
            spawn("smsbox", [SMSBOX, "-v", "2", str(conf)])

            async def smsbox_ready() -> bool:
                if "<type>smsbox</type>" not in await _status(session, admin_port):
                    return False
                async with session.get(f"http://127.0.0.1:{sendsms_port}/") as r:
                    return r.status > 0

            await _wait_for("smsbox connected and sendsms port up", smsbox_ready, procs, tmp)

            base = f"http://127.0.0.1:{sendsms_port}/cgi-bin/sendsms"
            n_requests = -(-total_messages // recipients_per_request)
            next_req = 0
            accepted = errors = 0
            first_error = ""
            t0 = time.monotonic()
            deadline = t0 + timeout_s

            async def worker() -> None:
                nonlocal next_req, accepted, errors, first_error
                while next_req < n_requests and time.monotonic() < deadline:
                    i = next_req
                    next_req += 1
                    lo = i * recipients_per_request
                    hi = min(lo + recipients_per_request, total_messages)
                    # Distinct numbers: smsbox de-duplicates recipients.
                    to = "+".join(str(46700000000 + k) for k in range(lo, hi))
                    url = URL(
                        f"{base}?username={USER}&password={PASSWORD}&to={to}&text=bench+{i}",
                        encoded=True,
                    )
                    try:
                        async with session.get(url) as resp:
                            body = await resp.text()
                            ok = resp.status == 202
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        ok, body = False, repr(exc)
                    if ok:
                        accepted += hi - lo
                    else:
                        errors += 1
                        first_error = first_error or body[:200]

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            sent = 0
            while time.monotonic() < deadline:  # drain: bounded by timeout_s
                sent = _smsc_sent(await _status(session, admin_port))
                if sent >= accepted:
                    break
                await asyncio.sleep(0.02)
            seconds = time.monotonic() - t0
        _stop(procs["fakesmsc"], signal.SIGINT)
        summary = fake_out.read_text(errors="replace")
        m = re.search(r"(\d+) messages sent and (\d+) received", summary)
        received = int(m.group(2)) if m else None
        if accepted == 0:
            raise KannelError(f"no sendsms request accepted; first error: {first_error!r}")
        delivered = received if received is not None else sent
        how = (
            "end-to-end: fakesmsc's own received count; clock stops when bearerbox "
            "/status.xml shows the fake smsc sent all accepted messages"
            if received is not None
            else "bearerbox /status.xml smsc sent counter"
        )
        if errors:
            how += f"; {errors} HTTP errors, first: {first_error!r}"
        if next_req < n_requests or sent < accepted:
            how += f"; INCOMPLETE: timeout_s={timeout_s} hit before all were sent"
        rate = round(delivered / seconds, 1) if seconds > 0 else 0.0
        return KannelResult(
            messages=delivered, seconds=round(seconds, 3), messages_per_s=rate,
            requested=total_messages, accepted=accepted, sent_by_bearerbox=sent,
            received_by_fakesmsc=received, http_errors=errors,
            recipients_per_request=recipients_per_request, concurrency=concurrency,
            counted_by=how,
        )  # fmt: skip
    finally:
        # fakesmsc first (SIGINT = clean summary), then smsbox, then bearerbox.
        for name, sig in (
            ("fakesmsc", signal.SIGINT),
            ("smsbox", signal.SIGTERM),
            ("bearerbox", signal.SIGTERM),
        ):
            if name in procs:
                _stop(procs[name], sig)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description="Kannel SMS throughput baseline")
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--per-request", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    result = asyncio.run(measure_kannel(a.messages, a.per_request, a.concurrency, a.timeout))
    for key, value in asdict(result).items():
        print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()

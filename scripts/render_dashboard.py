#!/usr/bin/env python3
"""Helper of scripts/render-dashboard.sh, which starts the stack and calls these subcommands.

  amqp-proxy  a loopback TCP proxy in front of RabbitMQ, used by ingest only. SIGUSR1 cuts every
              connection and refuses new ones (a broker outage as ingest sees it), SIGUSR2 ends it.
  setup       seeds the scenario's tenants (wafleet CLI) and their simulated bridges.
  load        drives the scenario through the simulated bridges (TENANTS and Load below) and writes
              its events, which the render draws as annotations.
  render      runs every PromQL target of the Grafana dashboard JSON against Prometheus
              (query_range for graphs, an instant query at the end for stat and table panels,
              template variables substituted the way Grafana does) and draws the panels in the
              dashboard's grid, dark theme, to a PNG; a panel without data says "No data".

Everything talks to 127.0.0.1 only. Any unexpected failure raises, so the script fails loudly.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def log(msg: str) -> None:
    print(f"[render-dashboard] {msg}", flush=True)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 15.0, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for any status, raises on transport errors."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if auth:
        import base64
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_json(url: str, obj) -> tuple[int, dict]:
    status, body = http("POST", url, json.dumps(obj).encode(), {"content-type": "application/json"})
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, {"raw": body.decode(errors="replace")}


# ------------------------------------------------------------------------------------------------
# amqp-proxy
# ------------------------------------------------------------------------------------------------

def cmd_amqp_proxy(args) -> None:
    host, port = args.listen.rsplit(":", 1)
    up_host, up_port = args.upstream.rsplit(":", 1)
    state = {"down": False, "conns": set()}

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        if state["down"]:
            client_w.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection(up_host, int(up_port))
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, up_w)
        state["conns"].add(pair)
        try:
            await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
        except asyncio.CancelledError:
            pass
        finally:
            state["conns"].discard(pair)

    def cut():
        state["down"] = True
        for a, b in list(state["conns"]):
            a.transport.abort()
            b.transport.abort()
        log("amqp-proxy: broker link cut")

    def heal():
        state["down"] = False
        log("amqp-proxy: broker link restored")

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, cut)
        loop.add_signal_handler(signal.SIGUSR2, heal)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        server = await asyncio.start_server(handle, host, int(port))
        async with server:
            await stop.wait()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------
# setup and load: the scenario
# ------------------------------------------------------------------------------------------------

# ref -> bot, rules, steady messages per minute, what customers write.
TENANTS = {
    "bakery": {"bot": "rules", "per_min": 16, "rules": {
        "hours": "We bake from 7 to 15, Monday to Saturday.",
        "sourdough": "Sourdough comes out of the oven at 8.",
        "cake": "Birthday cakes need two days' notice."},
        "texts": ["What are your opening hours?", "Is the sourdough ready?", "Can I order a cake for Sunday?",
                  "Saturday hours?", "Any sourdough left?"]},
    "garage": {"bot": "echo", "per_min": 9, "texts": [
        "My car makes a strange noise", "Can I book a service on Friday?", "Is my car ready?",
        "How much is an MOT?"]},
    "florist": {"bot": "rules", "per_min": 8, "rules": {
        "deliver": "We deliver within 10 km, same day before 14:00.",
        "roses": "A dozen red roses is 35 EUR."},
        "texts": ["Do you deliver today?", "How much are roses?", "Can you deliver to the hospital?"]},
    "dentist": {"bot": "http", "per_min": 7, "texts": [
        "I need an appointment", "Toothache, can you see me today?", "Can I move my appointment?"]},
    "pizzeria": {"bot": "rules", "per_min": 6, "rules": {
        "menu": "Menu: margherita 9, diavola 11, quattro formaggi 12.",
        "order": "Order received, ready in 20 minutes.",
        "open": "Open 12-23 every day."},
        "texts": ["Are you open tonight?", "Can I see the menu?", "I want to order 2 margheritas"]},
    "gym": {"bot": "echo", "per_min": 5, "texts": [
        "Is the pool open?", "Cancel my 6pm class", "Do you have a day pass?"]},
}
CANARIES = ["canary_a", "canary_b"]


def run_cli(wafleet: str, *argv: str) -> str:
    out = subprocess.run([wafleet, *argv], check=True, capture_output=True, text=True)
    return out.stdout


def cmd_setup(args) -> None:
    secrets = {}
    for ref, t in TENANTS.items():
        extra = ["--bot-url", f"http://127.0.0.1:{args.bot_port}/hook"] if t["bot"] == "http" else []
        out = run_cli(args.wafleet, "tenants", "add", ref, "--bridge", ref, "--bot", t["bot"], *extra)
        if t["bot"] == "http":
            secrets[ref] = out.strip().splitlines()[-1]
        for keyword, reply in t.get("rules", {}).items():
            run_cli(args.wafleet, "rules", "add", ref, keyword, reply)
    for ref in CANARIES:
        run_cli(args.wafleet, "tenants", "add", ref, "--bridge", ref, "--bot", "echo")
    for ref in [*TENANTS, *CANARIES]:
        url = run_cli(args.wafleet, "webhook-url", ref, "--base", args.ingest).strip().splitlines()[-1]
        status, _ = post_json(f"{args.sim}/_sim/bridges",
                              {"customer_ref": ref, "webhook_url": url, "api_key": args.api_key})
        if status != 200:
            raise SystemExit(f"registering bridge {ref} at the simulator answered {status}")
    with open(args.secrets_out, "w") as f:
        json.dump(secrets, f)
    os.chmod(args.secrets_out, 0o600)
    log(f"setup: {len(TENANTS)} tenants + {len(CANARIES)} canary tenants on simulated bridges")


class Bot(BaseHTTPRequestHandler):
    """The dentist's own HTTP bot: verifies the signature, answers, or fails while `down`."""
    secret = b""
    down_until = 0.0
    calls = {"ok": 0, "503": 0, "bad_signature": 0}

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        ts = self.headers.get("X-Wafleet-Timestamp", "")
        want = "v1=" + hmac.new(self.secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.headers.get("X-Wafleet-Signature", "")):
            Bot.calls["bad_signature"] += 1
            return self.answer(401, b"{}")
        if time.time() < Bot.down_until:
            Bot.calls["503"] += 1
            return self.answer(503, b'{"error":"maintenance"}')
        Bot.calls["ok"] += 1
        text = json.loads(body).get("text", "").lower()
        reply = ("Tomorrow at 9:30 is free, shall I book it?" if "appointment" in text
                 else "Please call 555-0101, we will fit you in today." if "tooth" in text
                 else "Thanks, the front desk will answer shortly.")
        self.answer(200, json.dumps({"replies": [{"text": reply}]}).encode())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Load:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.fired = {}     # receiver status -> count
        self.junk = {}      # ingest status -> count
        self.events = []    # (epoch seconds, text)
        self.errors = []

    def note(self, text: str) -> None:
        self.events.append((time.time(), text))
        log(f"t+{time.time() - self.t0:5.0f}s  {text}")

    def count(self, table: dict, key) -> None:
        with self.lock:
            table[key] = table.get(key, 0) + 1

    def fire(self, ref: str, chat: str, text: str) -> None:
        try:
            status, body = post_json(f"{self.args.sim}/_sim/bridges/{ref}/fire-message", {"chat": chat, "body": text})
            self.count(self.fired, body.get("status", f"sim {status}") if isinstance(body, dict) else status)
        except Exception as e:  # noqa: BLE001 (counted, judged at the end)
            self.count(self.fired, type(e).__name__)

    def customers(self, ref: str) -> list[str]:
        base = 100 + 100 * list(TENANTS).index(ref)
        return [f"44770090{base + i:04d}" for i in range(12)]

    def steady(self, ref: str) -> None:
        t = TENANTS[ref]
        rate = t["per_min"] / 60.0
        rng = random.Random(f"{self.args.seed}-{ref}")
        people = self.customers(ref)
        while not self.stop.wait(rng.expovariate(rate)):
            self.pool.submit(self.fire, ref, rng.choice(people), rng.choice(t["texts"]))

    def junk_requests(self) -> None:
        """What a public webhook endpoint also receives: scanners, forged tokens, broken clients."""
        bridges = {b["customer_ref"]: b["webhook_url"] for b in json.loads(http("GET", f"{self.args.sim}/_sim/bridges")[1])}
        url = bridges["bakery"]
        forged = url[:-6] + ("AAAAAA" if not url.endswith("AAAAAA") else "BBBBBB")
        ok_body = json.dumps({"event": "message", "customer_ref": "bakery", "message_id": "3EB0JUNK",
                              "chat_id": "447700900100@s.whatsapp.net", "body": "hi", "from_me": False}).encode()
        kinds = [
            ("POST", forged, ok_body, {"content-type": "application/json"}),
            ("POST", url, ok_body, {"content-type": "text/plain"}),
            ("POST", url, b'{"event": "message", "data": {', {"content-type": "application/json"}),
            ("POST", url, ok_body.replace(b'"bakery"', b'"garage"'), {"content-type": "application/json"}),
            ("GET", f"{self.args.ingest}/wp-login.php", None, {}),
            ("GET", url, None, {}),
        ]
        rng = random.Random(f"{self.args.seed}-junk")
        while not self.stop.wait(rng.uniform(2.0, 7.0)):
            method, target, body, headers = rng.choice(kinds)
            try:
                status, _ = http(method, target, body, headers)
                self.count(self.junk, status)
            except Exception as e:  # noqa: BLE001
                self.count(self.junk, type(e).__name__)

    # --- the incidents -----------------------------------------------------------------------
    def lunch_rush(self) -> None:
        self.note("lunch rush: 150 messages to pizzeria in 10 s")
        people = self.customers("pizzeria")
        for i in range(150):
            if self.stop.is_set():
                return
            self.pool.submit(self.fire, "pizzeria", self.rng.choice(people),
                             self.rng.choice(["I want to order a diavola", "Menu please", "Order 3 margheritas"]))
            time.sleep(10 / 150)

    def rotate_gym(self) -> None:
        new = run_cli(self.args.wafleet, "tenants", "rotate-url", "gym", "--base", self.args.ingest).strip().splitlines()[-1]
        self.note("gym's URL rotated; its bridge keeps the old one for 20 s")
        self.after(20, lambda: self.set_bridge_url("gym", new))

    def set_bridge_url(self, ref: str, url: str) -> None:
        status, _ = post_json(f"{self.args.sim}/_sim/bridges", {"customer_ref": ref, "webhook_url": url})
        if status != 200:
            self.errors.append(f"updating the {ref} bridge answered {status}")

    def bot_down(self) -> None:
        Bot.down_until = time.time() + 30
        self.note("dentist's HTTP bot answers 503 for 30 s")

    def too_many_requests(self) -> None:
        self.fault({"status": 429, "retry_after": 4, "remaining": 3})
        self.note("WA Bridges answers 429 (Retry-After 4) three times")

    def lost_response(self) -> None:
        self.fault({"status": 502, "remaining": 1, "record_then_fail": True})
        self.note("WA Bridges sends a reply but answers 502")

    def fault(self, fault: dict) -> None:
        status, body = post_json(f"{self.args.sim}/_sim/fault", fault)
        if status >= 300:
            self.errors.append(f"setting fault {fault} answered {status} {body}")

    def poison(self) -> None:
        self.note("a buggy publisher puts 3 non-envelopes on wa.tenant.garage (every 5 s)")
        vhost = urllib.parse.quote(self.args.vhost, safe="")
        for i in range(3):
            if i:
                time.sleep(5)
            status, body = http("POST", f"{self.args.rabbit_api}/api/exchanges/{vhost}/amq.default/publish",
                                json.dumps({"properties": {"delivery_mode": 2}, "routing_key": "wa.tenant.garage",
                                            "payload": '{"not": "a wafleet envelope"}',
                                            "payload_encoding": "string"}).encode(),
                                {"content-type": "application/json"}, auth=("guest", "guest"))
            if status != 200 or not json.loads(body).get("routed"):
                self.errors.append(f"publishing a poison message answered {status} {body!r}")

    def worker_restart(self) -> None:
        with open(self.args.worker_pidfile) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        self.note("worker pod replaced: stopped, the new one starts 20 s later")

    def broker_outage(self) -> None:
        os.kill(self.args.proxy_pid, signal.SIGUSR1)
        self.note("ingest loses its broker connection for 20 s")
        self.after(20, lambda: os.kill(self.args.proxy_pid, signal.SIGUSR2))

    def disable_florist(self) -> None:
        run_cli(self.args.wafleet, "tenants", "disable", "florist")
        self.note("florist disabled for 30 s")
        self.after(30, lambda: run_cli(self.args.wafleet, "tenants", "enable", "florist"))

    def after(self, secs: float, fn) -> None:
        def run():
            # Runs even if the load ends first: every incident must be undone.
            time.sleep(secs)
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"follow-up {fn}: {e}")
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.followups.append(t)

    def run(self) -> None:
        a = self.args
        Bot.secret = json.load(open(a.secrets))["dentist"].encode()
        bot = ThreadingHTTPServer(("127.0.0.1", a.bot_port), Bot)
        threading.Thread(target=bot.serve_forever, daemon=True).start()
        self.followups: list[threading.Thread] = []
        d = a.duration
        timeline = [
            (0.08 * d, self.lunch_rush), (0.20 * d, self.rotate_gym), (0.29 * d, self.bot_down),
            (0.42 * d, self.worker_restart), (0.55 * d, self.too_many_requests), (0.60 * d, self.poison),
            (0.67 * d, self.broker_outage), (0.78 * d, self.disable_florist), (0.90 * d, self.lost_response),
        ]
        self.t0 = time.time()
        log(f"load: {d} s, {sum(t['per_min'] for t in TENANTS.values())} messages/min steady over {len(TENANTS)} tenants")
        threads = [threading.Thread(target=self.steady, args=(ref,), daemon=True) for ref in TENANTS]
        threads.append(threading.Thread(target=self.junk_requests, daemon=True))
        for t in threads:
            t.start()
        for at, action in timeline:
            time.sleep(max(0.0, self.t0 + at - time.time()))
            try:
                action()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"{action.__name__}: {e}")
        time.sleep(max(0.0, self.t0 + d - time.time()))
        self.stop.set()
        for t in threads + self.followups:
            t.join(timeout=60)
        self.pool.shutdown(wait=True)
        bot.shutdown()
        with open(a.events_out, "w") as f:
            json.dump({"start": self.t0, "end": time.time(), "events": self.events}, f, indent=1)
        log(f"load: bridge deliveries by ingest status {dict(sorted(self.fired.items(), key=str))}; "
            f"junk requests by status {dict(sorted(self.junk.items(), key=str))}; http bot {Bot.calls}")
        accepted = self.fired.get(200, 0)
        total = sum(self.fired.values())
        if total == 0 or accepted < 0.9 * total:
            self.errors.append(f"only {accepted} of {total} bridge deliveries were accepted by ingest")
        if Bot.calls["bad_signature"]:
            self.errors.append(f"{Bot.calls['bad_signature']} bot calls had a bad signature")
        if self.errors:
            raise SystemExit("load FAILED:\n  " + "\n  ".join(self.errors))


def cmd_load(args) -> None:
    if args.duration < 120:
        raise SystemExit("--duration must be at least 120 s (the incidents need room)")
    Load(args).run()


# ------------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------------

# Grafana's dark theme and classic palette.
BG, PANEL, BORDER = "#111217", "#181b1f", "#2c3036"
TEXT, MUTED, GRID = "#ccccdc", "#8e8e9e", "#26292e"
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A",
         "blue": "#5794F2", "purple": "#B877D9", "transparent": PANEL}
ANNOTATION = "#00d3ff"


def fmt_number(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def fmt_unit(v: float, unit: str) -> str:
    """Grafana-like value formatting for the units the dashboard uses."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "s":
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{fmt_number(v * 1e6)} µs"
        if a < 1:
            return f"{fmt_number(v * 1e3)} ms"
        if a < 60:
            return f"{fmt_number(v)} s"
        if a < 3600:
            return f"{fmt_number(v / 60)} min"
        return f"{fmt_number(v / 3600)} hour"
    if unit == "m":
        return f"{fmt_number(v)} min" if abs(v) < 60 else f"{fmt_number(v / 60)} hour"
    if unit == "bytes":
        a, i = abs(v), 0
        names = ["B", "KiB", "MiB", "GiB", "TiB"]
        while a >= 1024 and i < len(names) - 1:
            a, v, i = a / 1024, v / 1024, i + 1
        return f"{fmt_number(v)} {names[i]}"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    a = abs(v)
    for div, s in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if a >= div:
            return f"{fmt_number(v / div)}{s}{suffix}"
    return f"{fmt_number(v)}{suffix}"


class Prom:
    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def get(self, path: str, **params) -> dict:
        status, body = http("GET", f"{self.base}{path}?{urllib.parse.urlencode(params)}", timeout=60)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params.get('query', '')!r}: {status} {data.get('error', body[:300])}")
        return data["data"]

    def range(self, q: str, start: float, end: float, step: int) -> list:
        return self.get("/api/v1/query_range", query=q, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))["result"]

    def instant(self, q: str, at: float) -> list:
        return self.get("/api/v1/query", query=q, time=f"{at:.3f}")["result"]


def substitute(expr: str, variables: dict) -> str:
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise SystemExit(f"dashboard expression uses an unknown variable ${name}: {expr}")
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def legend_name(fmt: str | None, labels: dict, expr: str) -> str:
    labels = {k: v for k, v in labels.items() if k != "__name__"}
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    if labels:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return expr


def field_unit(panel: dict, name: str, ref_id: str) -> str:
    """The unit of one series: the panel default, or a fieldConfig override matching it."""
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        m = o.get("matcher", {})
        hit = (m.get("id") == "byName" and m.get("options") == name
               or m.get("id") == "byFrameRefID" and m.get("options") == ref_id
               or m.get("id") == "byRegexp" and re.fullmatch(m.get("options", ""), name) is not None)
        for prop in o.get("properties", []) if hit else []:
            if prop.get("id") == "unit":
                unit = prop["value"]
    return unit


def threshold_color(value: float, thresholds: dict) -> str:
    color = "green"
    for step in thresholds.get("steps", []):
        if step.get("value") is None or value >= step["value"]:
            color = step["color"]
    return NAMED.get(color, color)


def cmd_render(args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator
    from PIL import Image

    dash = json.load(open(args.dashboard))
    run = json.load(open(args.events))
    prom = Prom(args.prometheus)
    start, end = run["start"] - args.lead, run["end"] + args.tail
    step = max(args.scrape_interval, int(math.ceil((end - start) / 400)))
    # Grafana: $__interval is the step, $__rate_interval = max($__interval + scrape, 4 × scrape).
    variables = {
        # The tenant row shows the tenant of the lunch rush, whose queue and sends move most.
        "namespace": args.namespace, "vhost": args.vhost, "topn": "10", "datasource": "prometheus", "tenant": "pizzeria",
        "__interval": f"{step}s", "__rate_interval": f"{max(step + args.scrape_interval, 4 * args.scrape_interval)}s",
        "__range": f"{int(end - start)}s",
    }
    tz = dt.timezone.utc

    # --- layout: Grafana's grid is 24 columns wide, a height unit is 30 px + 8 px margin ------
    events = [(t, text) for t, text in run["events"]]
    ev_cols = 3
    ev_rows = math.ceil(len(events) / ev_cols)
    W, U, M = 1600, 34, 7
    HEADER = 64 + 15 * ev_rows + 12
    panels = sorted(dash["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows_total = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    H = HEADER + rows_total * U + 24
    dpi = 100
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi, facecolor=BG)
    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 8, "text.color": TEXT,
                         "axes.labelcolor": TEXT, "xtick.color": MUTED, "ytick.color": MUTED})
    col = (W - 2 * M) / 24

    def box(px_x, px_y, px_w, px_h):
        """Pixel box (from the top left) → figure fractions [left, bottom, width, height]."""
        return [px_x / W, 1 - (px_y + px_h) / H, px_w / W, px_h / H]

    def ftext(px_x, px_y, s, **kw):
        fig.text(px_x / W, 1 - px_y / H, s, **kw)

    # --- header: title, variables, time range, events -----------------------------------------
    renderer = fig.canvas.get_renderer()
    x = M + 4
    for label, value, kw in [(dash.get("title", "dashboard"), "", dict(fontsize=15, fontweight="bold")),
                             ("Prometheus", "prometheus", {}), ("Namespace", args.namespace, {}),
                             ("RabbitMQ vhost", args.vhost, {}), ("Top N", "10", {})]:
        if value:
            kw = dict(fontsize=8.5, bbox=dict(boxstyle="round,pad=0.4", fc=PANEL, ec=BORDER, lw=0.8))
        t = fig.text(x / W, 1 - 22 / H, f"{label}   {value}" if value else label, va="center", **kw)
        x += t.get_window_extent(renderer).width + (14 if value else 18)
    t_from = dt.datetime.fromtimestamp(start, tz).strftime("%Y-%m-%d %H:%M:%S")
    t_to = dt.datetime.fromtimestamp(end, tz).strftime("%H:%M:%S UTC")
    ftext(W - M - 4, 22, f"{t_from} to {t_to}   step {step}s, \\$__rate_interval {variables['__rate_interval']}",
          fontsize=8.5, ha="right", va="center", color=MUTED)
    ftext(M + 4, 46, "Annotations (events of this run's scenario):", fontsize=8.5, color=MUTED, va="center")
    ftext(W - M - 4, 46, "Drawn from a real run by scripts/render-dashboard.sh: a temporary Prometheus scraped ingest, "
          "worker and rabbitmq_prometheus, every panel's PromQL ran as is",
          fontsize=8, ha="right", va="center", color=MUTED)
    for i, (t, text) in enumerate(events):
        cx, cy = M + 4 + (i // ev_rows) * (W - 2 * M) / ev_cols, 64 + (i % ev_rows) * 15
        ftext(cx + 5, cy, str(i + 1), fontsize=7, color=BG, va="center", ha="center", fontweight="bold",
              bbox=dict(boxstyle="circle,pad=0.2", fc=ANNOTATION, ec="none"))
        ftext(cx + 16, cy, f"{dt.datetime.fromtimestamp(t, tz):%H:%M:%S}  {text}", fontsize=8, va="center")

    report = []
    for p in panels:
        g = p["gridPos"]
        px, py = M + g["x"] * col, HEADER + g["y"] * U
        pw, ph = g["w"] * col - M, g["h"] * U - M
        # Grafana substitutes variables in titles too (the tenant row: "Tenant $tenant").
        title = p.get("title", "").replace("$tenant", variables["tenant"])
        if p["type"] == "row":
            ftext(px + 4, py + ph / 2 + 2, f"⌄  {title}", fontsize=11, fontweight="bold", va="center")
            continue
        fig.patches.append(FancyBboxPatch((px / W, 1 - (py + ph) / H), pw / W, ph / H,
                                          boxstyle="round,pad=0,rounding_size=0.002", transform=fig.transFigure,
                                          fc=PANEL, ec=BORDER, lw=0.8, zorder=-1))
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit", "short")
        targets = [t for t in p.get("targets", []) if not t.get("hide")]

        if p["type"] == "stat":
            values = []
            for t in targets:
                for s in prom.instant(substitute(t["expr"], variables), end):
                    v = float(s["value"][1])
                    if not math.isnan(v):
                        values.append(v)
            has = bool(values)
            if has:
                v = values[0]
                fc = threshold_color(v, defaults.get("thresholds", {}))
                fig.patches.append(FancyBboxPatch((px / W, 1 - (py + ph) / H), pw / W, ph / H,
                                                  boxstyle="round,pad=0,rounding_size=0.002",
                                                  transform=fig.transFigure, fc=fc, ec=BORDER, lw=0.8, zorder=-1))
                ftext(px + pw / 2, py + ph / 2 + 9, fmt_unit(v, unit), fontsize=26, fontweight="bold",
                      color="white", ha="center", va="center")
            else:
                ftext(px + pw / 2, py + ph / 2 + 9, "No data", fontsize=11, color=MUTED, ha="center", va="center")
            ftext(px + 8, py + 14, title, fontsize=9, fontweight="bold", va="center",
                  color="white" if has else TEXT)
            report.append((title, f"{fmt_unit(values[0], unit)}" if has else "no data"))
            continue

        ftext(px + 8, py + 14, title, fontsize=9, fontweight="bold", va="center")

        if p["type"] == "table":
            rows = []
            for t in targets:
                for s in prom.instant(substitute(t["expr"], variables), end):
                    rows.append({**{k: v for k, v in s["metric"].items() if k != "__name__"},
                                 "Value": float(s["value"][1])})
            org = next((tr["options"] for tr in p.get("transformations", []) if tr["id"] == "organize"), {})
            rename = org.get("renameByName", {})
            cols = [c for c in sorted({k for r in rows for k in r}, key=lambda c: (c == "Value", c))
                    if not org.get("excludeByName", {}).get(c)]
            sort = (p.get("options", {}).get("sortBy") or [{}])[0]
            key = next((c for c in cols if rename.get(c, c) == sort.get("displayName")), "Value")
            rows.sort(key=lambda r: (r.get(key, 0), r.get("queue", "")), reverse=sort.get("desc", True))
            if not rows:
                ftext(px + pw / 2, py + ph / 2, "No data", fontsize=11, color=MUTED, ha="center", va="center")
                report.append((title, "no data"))
                continue
            y0, rh = py + 38, 16
            cw = (pw - 16) / len(cols)
            for j, c in enumerate(cols):
                ftext(px + 8 + j * cw + (cw - 8 if c == "Value" else 0), y0, rename.get(c, c), fontsize=8.5,
                      fontweight="bold", color="#6e9fff", va="center", ha="right" if c == "Value" else "left")
            shown = rows[: int((ph - 50) // rh)]
            for i, r in enumerate(shown):
                yy = y0 + (i + 1) * rh + 2
                if i % 2 == 0:
                    fig.patches.append(FancyBboxPatch(((px + 4) / W, 1 - (yy + rh / 2) / H), (pw - 8) / W, rh / H,
                                                      boxstyle="square,pad=0", transform=fig.transFigure,
                                                      fc="#1f2228", ec="none", zorder=-1))
                for j, c in enumerate(cols):
                    v = r.get(c, "")
                    s = fmt_unit(v, unit) if c == "Value" else str(v)
                    ftext(px + 8 + j * cw + (cw - 8 if c == "Value" else 0), yy, s, fontsize=8, va="center",
                          ha="right" if c == "Value" else "left")
            report.append((title, f"{len(rows)} rows, max {fmt_unit(max(r['Value'] for r in rows), unit)}"))
            continue

        # --- time series ------------------------------------------------------------------------
        series = []  # (name, unit, points)
        for t in targets:
            expr = substitute(t["expr"], variables)
            for s in prom.range(expr, start, end, step):
                pts = [(float(ts), float(v)) for ts, v in s["values"]]
                if all(math.isnan(v) for _, v in pts):
                    continue
                name = legend_name(t.get("legendFormat"), s["metric"], expr)
                series.append((name, field_unit(p, name, t.get("refId", "")), pts))
        custom = defaults.get("custom", {})
        stacked = custom.get("stacking", {}).get("mode") == "normal"
        legend_rows = min(len(series), max(1, int((ph * 0.42 - 16) // 13)))
        legend_h = 16 + 13 * legend_rows + (11 if len(series) > legend_rows else 0) if series else 0
        # Like Grafana, a second unit (from a fieldConfig override) gets its own axis on the right.
        present = list(dict.fromkeys(u for _n, u, _p in series))
        left_unit = unit if unit in present or not present else present[0]
        right = next((u for u in present if u != left_unit), None)
        ax = fig.add_axes(box(px + 58, py + 30, pw - 72 - (50 if right else 0), ph - 30 - 20 - legend_h))
        axes = {left_unit: ax}
        if right:
            axes[right] = ax.twinx()
        for u, a in axes.items():
            a.set_facecolor(PANEL)
            a.patch.set_visible(a is ax)
            for spine in a.spines.values():
                spine.set_visible(False)
            a.tick_params(length=0, labelsize=7.5, pad=3)
            a.yaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=2))
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, u=u: fmt_unit(v, u)))
        ax.grid(True, color=GRID, lw=0.8)
        ax.set_xlim(dt.datetime.fromtimestamp(start, tz), dt.datetime.fromtimestamp(end, tz))
        span = end - start
        tick = next(t for t in (15, 30, 60, 120, 300, 600, 1800, 3600) if span / t <= 9)
        # Ticks on round times, none so close to the edges that it runs into the y-axis labels.
        ticks = [dt.datetime.fromtimestamp(t, tz) for t in range(int(math.ceil(start / tick) * tick), int(end), tick)
                 if start + 0.05 * span < t < end - 0.03 * span]
        ax.xaxis.set_major_locator(FixedLocator(mdates.date2num(ticks)))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if tick < 60 else "%H:%M", tz=tz))
        for i, (t, _text) in enumerate(events):
            ax.axvline(dt.datetime.fromtimestamp(t, tz), color=ANNOTATION, lw=0.8, ls=(0, (3, 3)), alpha=0.55)
            ax.annotate(str(i + 1), (dt.datetime.fromtimestamp(t, tz), 1.0), xycoords=("data", "axes fraction"),
                        fontsize=6, color=BG, ha="center", va="center", fontweight="bold", annotation_clip=False,
                        bbox=dict(boxstyle="circle,pad=0.15", fc=ANNOTATION, ec="none"))
        if not series:
            ax.set_ylim(0, 1)
            ax.set_yticklabels([])
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, fontsize=11, color=MUTED, ha="center", va="center")
            report.append((title, "no data"))
            continue
        grid_ts = sorted({ts for _n, _u, pts in series for ts, _ in pts})
        xs = [dt.datetime.fromtimestamp(ts, tz) for ts in grid_ts]
        bases = {u: [0.0] * len(grid_ts) for u in axes}
        lims = {u: [0.0, 0.0] for u in axes}
        stats = []
        for i, (name, u, pts) in enumerate(series):
            a = axes.get(u, ax)
            color = PALETTE[i % len(PALETTE)]
            by_ts = dict(pts)
            ys = [by_ts.get(ts, float("nan")) for ts in grid_ts]
            if stacked:
                base = bases[u]
                top = [b + (0.0 if math.isnan(y) else y) for b, y in zip(base, ys)]
                a.fill_between(xs, base, top, color=color, alpha=0.10, lw=0)
                a.plot(xs, top, color=color, lw=1.1)
                bases[u] = top
                drawn = top
            else:
                a.fill_between(xs, 0, ys, color=color, alpha=0.10, lw=0)
                a.plot(xs, ys, color=color, lw=1.1)
                drawn = ys
            finite = [y for y in drawn if not math.isnan(y)]
            lims[u] = [min(lims[u][0], min(finite)), max(lims[u][1], max(finite))]
            values = [y for y in ys if not math.isnan(y)]
            stats.append((name, u, color, values[-1], max(values)))
        for u, a in axes.items():
            lo, hi = lims[u]
            a.set_ylim(lo * 1.1, hi * 1.12 if hi > 0 else 1)
        # Legend as a table below the graph (displayMode "table", calcs lastNotNull and max).
        ly = py + ph - legend_h + 2
        ftext(px + pw - 90, ly, "Last *", fontsize=7.5, color="#6e9fff", ha="right", va="center")
        ftext(px + pw - 12, ly, "Max", fontsize=7.5, color="#6e9fff", ha="right", va="center")
        shown = stats if len(stats) <= legend_rows else sorted(stats, key=lambda s: -s[4])[:legend_rows]
        room = int((pw - 200) / 5.2)
        for i, (name, u, color, last, mx) in enumerate(shown):
            yy = ly + 13 * (i + 1)
            fig.add_artist(matplotlib.lines.Line2D([(px + 10) / W, (px + 22) / W], [1 - yy / H] * 2, color=color, lw=2.5))
            label = name + ("  (right axis)" if right and u == right else "")
            ftext(px + 28, yy, label if len(label) <= room else label[: room - 1] + "…", fontsize=7.5, va="center")
            ftext(px + pw - 90, yy, fmt_unit(last, u), fontsize=7.5, ha="right", va="center")
            ftext(px + pw - 12, yy, fmt_unit(mx, u), fontsize=7.5, ha="right", va="center")
        if len(stats) > legend_rows:
            ftext(px + 28, ly + 13 * (legend_rows + 1) - 2, f"… {len(stats) - legend_rows} more series (smaller max)",
                  fontsize=7, color=MUTED, va="center")
        report.append((title, ", ".join(f"{n} max {fmt_unit(mx, u)}" for n, u, _c, _l, mx in
                                        sorted(stats, key=lambda s: -s[4])[:3])
                       + (f" (+{len(stats) - 3})" if len(stats) > 3 else "")))

    tmp = args.out + ".tmp.png"
    fig.savefig(tmp, dpi=dpi, facecolor=BG)
    plt.close(fig)
    # A 256-colour palette keeps the PNG small; the dark theme has few distinct colours.
    Image.open(tmp).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
        .save(args.out, optimize=True)
    os.remove(tmp)
    with_data = [t for t, r in report if r != "no data"]
    log(f"render: {args.out} ({os.path.getsize(args.out) // 1024} KiB, {W}x{H} px), "
        f"{len(with_data)} of {len(report)} panels with data")
    for title, r in report:
        print(f"    {title:<48} {r}")
    missing = [t for t in args.require if t not in with_data]
    if missing:
        raise SystemExit(f"render FAILED: no data in panels that every run must fill: {missing}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("amqp-proxy")
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.set_defaults(fn=cmd_amqp_proxy)

    p = sub.add_parser("setup")
    for a in ("--sim", "--ingest", "--wafleet", "--api-key", "--secrets-out"):
        p.add_argument(a, required=True)
    p.add_argument("--bot-port", type=int, required=True)
    p.set_defaults(fn=cmd_setup)

    p = sub.add_parser("load")
    for a in ("--sim", "--ingest", "--wafleet", "--rabbit-api", "--vhost", "--secrets", "--events-out"):
        p.add_argument(a, required=True)
    p.add_argument("--bot-port", type=int, required=True)
    p.add_argument("--proxy-pid", type=int, required=True)
    p.add_argument("--worker-pidfile", required=True)
    p.add_argument("--duration", type=int, default=240)
    p.add_argument("--seed", default="7")
    p.set_defaults(fn=cmd_load)

    p = sub.add_parser("render")
    for a in ("--prometheus", "--dashboard", "--events", "--out", "--namespace", "--vhost"):
        p.add_argument(a, required=True)
    p.add_argument("--scrape-interval", type=int, default=5)
    p.add_argument("--lead", type=float, default=30, help="seconds shown before the load starts")
    p.add_argument("--tail", type=float, default=0, help="seconds shown after the load ends")
    p.add_argument("--require", action="append", default=[], help="panel title that must have data")
    p.set_defaults(fn=cmd_render)

    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()

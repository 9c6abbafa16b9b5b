"""Local receivers for the PagerDuty Events API v2 and Opsgenie's alert API.

Every body the bot sends is checked against the fields, types, enums and
limits the two APIs document:

- PagerDuty: https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
  and .../resolve-events/ (POST /v2/enqueue; routing_key, event_action
  trigger|acknowledge|resolve, dedup_key at most 255 characters, payload
  with summary at most 1,024, source, severity critical|error|warning|info,
  timestamp ISO 8601, component, group, class, custom_details object;
  images, links, client, client_url).
- Opsgenie: https://docs.opsgenie.com/docs/alert-api (POST /v2/alerts:
  message at most 130, alias 512, description 15,000, responders, visibleTo,
  actions at most 10 of 50, tags at most 20 of 50, details at most 8,000 in
  all, entity 512, source 100, priority P1..P5, user 100, note 25,000;
  POST /v2/alerts/{identifier}/close?identifierType=id|alias|tiny with user,
  source, note; the key in `Authorization: GenieKey …`).

A body that does not fit is answered as the real API would (400 or 422)
and recorded with its violations; the test kit fails the test on any.
Incidents are kept per dedup key and alerts per alias, as the services
deduplicate them.

Usage: fake_pager.py ROUTING_KEY GENIE_KEY. Prints `READY PORT` and serves
until stdin closes. Control: GET /_events, POST /_fail {"path": prefix,
"status": N, "count": N, "retry_after": S}.
"""

import datetime
import json
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROUTING_KEY = sys.argv[1]
GENIE_KEY = sys.argv[2]
LOCK = threading.Lock()
EVENTS = []
FAILS = []
INCIDENTS = {}  # dedup_key -> "triggered" | "resolved"
ALERTS = {}  # alias -> "open" | "closed"


def is_str(v, max_len=None, nonempty=False):
    return (
        isinstance(v, str)
        and (max_len is None or len(v) <= max_len)
        and (not nonempty or v.strip() != "")
    )


def check_fields(obj, where, spec, errors, required=()):
    """spec: name -> predicate(value) -> bool (or a string describing it)."""
    if not isinstance(obj, dict):
        errors.append(f"{where} is not an object")
        return
    for k in required:
        if k not in obj:
            errors.append(f"{where}.{k} is required")
    for k, v in obj.items():
        if k not in spec:
            errors.append(f"{where}.{k} is not a documented field")
            continue
        ok, what = spec[k]
        if not ok(v):
            errors.append(f"{where}.{k} = {json.dumps(v)[:120]} is not {what}")


def iso8601(v):
    if not isinstance(v, str):
        return False
    try:
        datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def list_of(pred, max_items=None):
    return lambda v: isinstance(v, list) and (max_items is None or len(v) <= max_items) and all(pred(x) for x in v)


def pd_link(v):
    errs = []
    check_fields(v, "link", {"href": (lambda x: is_str(x, nonempty=True), "a URL"), "text": (is_str, "text")}, errs, ["href"])
    return not errs


def pd_image(v):
    errs = []
    check_fields(
        v,
        "image",
        {"src": (lambda x: is_str(x, nonempty=True), "a URL"), "href": (is_str, "a URL"), "alt": (is_str, "text")},
        errs,
        ["src"],
    )
    return not errs


def check_pagerduty(body):
    errors = []
    top = {
        "routing_key": (lambda v: v == ROUTING_KEY, "the integration key"),
        "event_action": (lambda v: v in ("trigger", "acknowledge", "resolve"), "trigger, acknowledge or resolve"),
        "dedup_key": (lambda v: is_str(v, 255, True), "a string of at most 255 characters"),
        "payload": (lambda v: isinstance(v, dict), "an object"),
        "images": (list_of(pd_image), "a list of images"),
        "links": (list_of(pd_link), "a list of links"),
        "client": (lambda v: is_str(v, nonempty=True), "a name"),
        "client_url": (lambda v: is_str(v, nonempty=True), "a URL"),
    }
    check_fields(body, "event", top, errors, ["routing_key", "event_action"])
    action = body.get("event_action") if isinstance(body, dict) else None
    if action == "trigger":
        if "payload" not in body:
            errors.append("event.payload is required for a trigger")
        else:
            check_fields(
                body["payload"],
                "payload",
                {
                    "summary": (lambda v: is_str(v, 1024, True), "a summary of at most 1,024 characters"),
                    "source": (lambda v: is_str(v, nonempty=True), "a source"),
                    "severity": (lambda v: v in ("critical", "error", "warning", "info"), "critical, error, warning or info"),
                    "timestamp": (iso8601, "an ISO 8601 time"),
                    "component": (is_str, "text"),
                    "group": (is_str, "text"),
                    "class": (is_str, "text"),
                    "custom_details": (lambda v: isinstance(v, dict), "an object"),
                },
                errors,
                ["summary", "source", "severity"],
            )
    elif action in ("acknowledge", "resolve"):
        if "dedup_key" not in body:
            errors.append(f"event.dedup_key is required for {action}")
        for k in ("payload", "images", "links", "client", "client_url"):
            if k in body:
                errors.append(f"event.{k} is only for a trigger")
    if len(json.dumps(body)) > 512 * 1024:
        errors.append("the event is larger than 512 KB")
    return errors


def responder(v):
    errs = []
    check_fields(
        v,
        "responder",
        {
            "type": (lambda x: x in ("team", "user", "escalation", "schedule"), "team, user, escalation or schedule"),
            "id": (is_str, "an id"),
            "name": (is_str, "a name"),
            "username": (is_str, "a user name"),
        },
        errs,
        ["type"],
    )
    if not errs and not any(k in v for k in ("id", "name", "username")):
        errs.append("no id, name or username")
    return not errs


def details(v):
    return (
        isinstance(v, dict)
        and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
        and sum(len(k) + len(x) for k, x in v.items()) <= 8000
    )


def check_opsgenie_create(body):
    errors = []
    check_fields(
        body,
        "alert",
        {
            "message": (lambda v: is_str(v, 130, True), "a message of at most 130 characters"),
            "alias": (lambda v: is_str(v, 512, True), "an alias of at most 512 characters"),
            "description": (lambda v: is_str(v, 15000), "a description of at most 15,000 characters"),
            "responders": (list_of(responder, 50), "a list of responders"),
            "visibleTo": (list_of(responder, 50), "a list of teams and users"),
            "actions": (list_of(lambda x: is_str(x, 50, True), 10), "at most 10 actions of 50 characters"),
            "tags": (list_of(lambda x: is_str(x, 50, True), 20), "at most 20 tags of 50 characters"),
            "details": (details, "string pairs of at most 8,000 characters in all"),
            "entity": (lambda v: is_str(v, 512), "an entity of at most 512 characters"),
            "source": (lambda v: is_str(v, 100), "a source of at most 100 characters"),
            "priority": (lambda v: v in ("P1", "P2", "P3", "P4", "P5"), "P1 to P5"),
            "user": (lambda v: is_str(v, 100), "a user of at most 100 characters"),
            "note": (lambda v: is_str(v, 25000), "a note of at most 25,000 characters"),
        },
        errors,
        ["message"],
    )
    return errors


def check_opsgenie_close(body):
    errors = []
    check_fields(
        body,
        "close",
        {
            "user": (lambda v: is_str(v, 100), "a user of at most 100 characters"),
            "source": (lambda v: is_str(v, 100), "a source of at most 100 characters"),
            "note": (lambda v: is_str(v, 25000), "a note of at most 25,000 characters"),
        },
        errors,
    )
    return errors


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw.decode("utf-8")), None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return None, f"not JSON: {e}"

    def do_GET(self):
        if self.path == "/_events":
            with LOCK:
                self.answer(200, EVENTS)
        else:
            self.answer(404, {"message": "not found"})

    def injected(self, path):
        with LOCK:
            for f in FAILS:
                if path.startswith(f["path"]) and f["count"] > 0:
                    f["count"] -= 1
                    return f
        return None

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        body, bad = self.read_body()
        if url.path == "/_fail":
            with LOCK:
                FAILS.append(
                    {
                        "path": body["path"],
                        "status": int(body["status"]),
                        "count": int(body.get("count", 1)),
                        "retry_after": body.get("retry_after"),
                    }
                )
            self.answer(200, {"ok": True})
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            bad = bad or "Content-Type is not application/json"
        fail = self.injected(url.path)
        if url.path == "/v2/enqueue":
            self.pagerduty(body, bad, fail)
        elif url.path.startswith("/v2/alerts"):
            self.opsgenie(url, body, bad, fail)
        else:
            self.answer(404, {"message": "not found"})

    def record(self, event):
        with LOCK:
            EVENTS.append(event)

    def failed(self, api, fail, body):
        self.record({"api": api, "action": "refused_by_test", "status": fail["status"], "body": body, "violations": []})
        headers = [("Retry-After", str(fail["retry_after"]))] if fail.get("retry_after") is not None else []
        self.answer(fail["status"], {"status": "error", "message": "injected by the test"}, headers)

    def pagerduty(self, body, bad, fail):
        violations = [bad] if bad else check_pagerduty(body)
        if fail and not violations:
            self.failed("pagerduty", fail, body)
            return
        action = body.get("event_action") if isinstance(body, dict) else None
        key = body.get("dedup_key") if isinstance(body, dict) else None
        event = {"api": "pagerduty", "action": action, "key": key, "body": body, "violations": violations}
        if violations:
            self.record(event)
            self.answer(400, {"status": "invalid event", "message": "Event object is invalid", "errors": violations})
            return
        with LOCK:
            before = INCIDENTS.get(key)
            if action == "trigger":
                event["new_incident"] = before != "triggered"
                INCIDENTS[key] = "triggered"
            elif action == "resolve":
                event["resolved_open"] = before == "triggered"
                if before:
                    INCIDENTS[key] = "resolved"
        self.record(event)
        self.answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def opsgenie(self, url, body, bad, fail):
        violations = [bad] if bad else []
        if self.headers.get("Authorization") != f"GenieKey {GENIE_KEY}":
            self.record({"api": "opsgenie", "action": "unauthorized", "body": body, "violations": ["Authorization is not GenieKey KEY"]})
            self.answer(401, {"message": "Could not authenticate", "took": 0.0, "requestId": str(uuid.uuid4())})
            return
        parts = url.path.split("/")
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/v2/alerts":
            action, alias = "create", body.get("alias") if isinstance(body, dict) else None
            violations += [] if bad else check_opsgenie_create(body)
        elif len(parts) == 5 and parts[4] == "close":
            action, alias = "close", urllib.parse.unquote(parts[3])
            if query.get("identifierType") != ["alias"]:
                violations.append("identifierType=alias is missing: the identifier would be read as an alert id")
            violations += [] if bad else check_opsgenie_close(body)
        else:
            self.answer(404, {"message": "not found"})
            return
        if fail and not violations:
            self.failed("opsgenie", fail, body)
            return
        event = {"api": "opsgenie", "action": action, "key": alias, "body": body, "violations": violations}
        if violations:
            self.record(event)
            self.answer(422, {"message": "; ".join(violations), "took": 0.0, "requestId": str(uuid.uuid4())})
            return
        with LOCK:
            before = ALERTS.get(alias)
            if action == "create":
                event["new_alert"] = before != "open"
                ALERTS[alias] = "open"
            else:
                event["closed_open"] = before == "open"
                if before:
                    ALERTS[alias] = "closed"
        self.record(event)
        self.answer(202, {"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()

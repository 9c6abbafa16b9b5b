"""A local stand-in for the Slack Web API and Socket Mode, for holdpoint-bot's
tests. It records every call, validates every Block Kit payload with Slack's
own Python SDK (slack_sdk: Block.parse / View and validate_json), and lets
the test inject failures and send Socket Mode envelopes.

Run: python fake_slack.py  -> prints "READY <http_port>" on stdout.

Control endpoints (JSON):
  GET  /_calls                 every recorded call
  POST /_fail {"method", "statuses": [429, 500], "retry_after": 1}
  POST /_groups {"S123": ["U1", "U2"]}
  POST /_delay {"method", "seconds": 4, "count": 2}   the next calls answer late
  POST /_socket/send {"payload": {...}}   -> {"acked": bool}
  POST /_socket/disconnect     sends a `disconnect` envelope
"""

import asyncio
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
import websockets

LOCK = threading.Lock()
CALLS = []
FAILS = {}  # method -> list of (status, retry_after)
DELAYS = {}  # method -> list of seconds, one per call to come
GROUPS = {}
TS = [1700000000]
SOCKET = {"conns": [], "acks": {}, "connects": 0}
LOOP = None
WS_PORT = [0]


def validate_blocks(blocks):
    """Errors found by slack_sdk in a list of blocks, as strings."""
    errors = []
    if not isinstance(blocks, list):
        return ["blocks is not a list"]
    if len(blocks) > 50:
        errors.append(f"{len(blocks)} blocks (Slack allows 50)")
    for b in blocks:
        try:
            parsed = Block.parse(b)
            if parsed is None or type(parsed).__name__ == "Block":
                errors.append(f"unknown block type: {b.get('type')}")
                continue
            parsed.validate_json()
            # Anything slack_sdk does not know would be dropped: compare.
            if normalise(parsed.to_dict()) != normalise(b):
                errors.append(
                    f"block {b.get('block_id')} does not round-trip through slack_sdk: "
                    f"{json.dumps(parsed.to_dict())[:300]} != {json.dumps(b)[:300]}"
                )
        except Exception as e:  # noqa: BLE001 - report every failure
            errors.append(f"block {b.get('block_id')}: {type(e).__name__}: {e}")
    return errors


def normalise(v):
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [normalise(x) for x in v]
    return v


# The external upload flow: file id -> what files.getUploadURLExternal
# announced and the bytes uploaded.
FILES = {}
PORT = [0]


def validate_upload_request(body):
    errors = []
    if not body.get("filename"):
        errors.append("files.getUploadURLExternal: no filename")
    try:
        if int(body.get("length", "")) <= 0:
            errors.append("files.getUploadURLExternal: length must be positive")
    except ValueError:
        errors.append(f"files.getUploadURLExternal: length {body.get('length')!r} is not a number")
    if len(body.get("alt_txt", "")) > 1000:
        errors.append("files.getUploadURLExternal: alt_txt over 1000 characters")
    return errors


def validate_complete(body):
    errors = []
    files = body.get("files")
    if isinstance(files, str):
        files = json.loads(files)
    if not isinstance(files, list) or not files:
        return ["files.completeUploadExternal: files must be a non-empty array"]
    for f in files:
        fid = f.get("id") if isinstance(f, dict) else None
        if not fid:
            errors.append(f"files.completeUploadExternal: a file without id: {f!r}")
            continue
        with LOCK:
            known = FILES.get(fid)
        if known is None:
            errors.append(f"files.completeUploadExternal: unknown file {fid}")
        elif known.get("bytes") is None:
            errors.append(f"files.completeUploadExternal: {fid} was never uploaded")
        extra = set(f) - {"id", "title"}
        if extra:
            errors.append(f"files.completeUploadExternal: unknown file fields {sorted(extra)}")
    if not body.get("channel_id") and body.get("thread_ts"):
        errors.append("files.completeUploadExternal: thread_ts without channel_id")
    return errors


def validate(method, body):
    errors = []
    if method == "files.getUploadURLExternal":
        errors += validate_upload_request(body)
    if method == "files.completeUploadExternal":
        errors += validate_complete(body)
    if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
        text = body.get("text")
        if not text and not body.get("blocks"):
            errors.append("no text and no blocks")
        if text is not None and len(text) > 4000:
            errors.append(f"text of {len(text)} characters (keep under 4000)")
        if "blocks" in body:
            errors += validate_blocks(body["blocks"])
        if not body.get("channel"):
            errors.append("no channel")
    if method == "chat.update" and not body.get("ts"):
        errors.append("no ts")
    if method == "chat.postEphemeral" and not body.get("user"):
        errors.append("no user")
    if method == "views.open":
        try:
            v = View(**body["view"])
            v.validate_json()
            if len(body["view"].get("private_metadata", "")) > 3000:
                errors.append("private_metadata over 3000")
            errors += validate_blocks(body["view"].get("blocks", []))
        except Exception as e:  # noqa: BLE001
            errors.append(f"view: {type(e).__name__}: {e}")
        if not body.get("trigger_id"):
            errors.append("no trigger_id")
    return errors


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/_calls":
            with LOCK:
                return self.reply(200, CALLS)
        if url.path.startswith("/_files/"):
            with LOCK:
                f = FILES.get(url.path[len("/_files/"):])
            if f is None or f.get("bytes") is None:
                return self.reply(404, {"ok": False})
            return self.reply(200, dict(
                {k: v for k, v in f.items() if k != "bytes"},
                hex=f["bytes"].hex(),
            ))
        if url.path.startswith("/api/"):
            params = dict(urllib.parse.parse_qsl(url.query))
            return self.api(url.path[5:], params)
        self.reply(404, {"ok": False})

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        raw = self.read_body()
        if url.path == "/_fail":
            req = json.loads(raw)
            with LOCK:
                FAILS.setdefault(req["method"], []).extend(
                    (s, req.get("retry_after")) for s in req["statuses"]
                )
            return self.reply(200, {"ok": True})
        if url.path == "/_delay":
            req = json.loads(raw)
            with LOCK:
                DELAYS.setdefault(req["method"], []).extend(
                    [float(req["seconds"])] * int(req.get("count", 1))
                )
            return self.reply(200, {"ok": True})
        if url.path == "/_groups":
            with LOCK:
                GROUPS.update(json.loads(raw))
            return self.reply(200, {"ok": True})
        if url.path == "/_socket/send":
            req = json.loads(raw)
            fut = asyncio.run_coroutine_threadsafe(socket_send(req["payload"]), LOOP)
            return self.reply(200, fut.result(timeout=15))
        if url.path == "/_socket/disconnect":
            fut = asyncio.run_coroutine_threadsafe(socket_disconnect(), LOOP)
            return self.reply(200, fut.result(timeout=15))
        if url.path == "/_socket/state":
            return self.reply(200, {"connects": SOCKET["connects"], "open": len(SOCKET["conns"])})
        if url.path.startswith("/_upload/"):
            fid = url.path[len("/_upload/"):]
            with LOCK:
                f = FILES.get(fid)
                errors = []
                if f is None:
                    errors.append(f"upload to an unknown URL {fid}")
                elif len(raw) != f["length"]:
                    errors.append(f"{len(raw)} bytes uploaded, {f['length']} announced")
                if f is not None:
                    f["bytes"] = raw
                CALLS.append({
                    "method": "upload", "body": {"file_id": fid, "bytes": len(raw)},
                    "auth": "", "errors": errors, "injected": None, "at": time.time(), "delayed": None,
                })
            if errors:
                return self.reply(400, {"ok": False, "errors": errors})
            return self.reply(200, {"ok": True})
        if url.path.startswith("/api/"):
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype and raw:
                body = json.loads(raw)
            else:
                body = dict(urllib.parse.parse_qsl(raw.decode()))
            return self.api(url.path[5:], body)
        self.reply(404, {"ok": False})

    def api(self, method, body):
        auth = self.headers.get("Authorization", "")
        errors = validate(method, body)
        with LOCK:
            fail = None
            queue = FAILS.get(method)
            if queue:
                fail = queue.pop(0)
            delays = DELAYS.get(method)
            delay = delays.pop(0) if delays else 0
            rec = {
                "method": method,
                "body": body,
                "auth": auth,
                "errors": errors,
                "injected": fail[0] if fail else None,
                "at": time.time(),
                "delayed": delay or None,
            }
            CALLS.append(rec)
        if delay:
            # Recorded at once, answered late: a slow Slack.
            time.sleep(delay)
        if fail and isinstance(fail[0], str):
            return self.reply(200, {"ok": False, "error": fail[0]})
        if fail:
            status, retry_after = fail
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return self.reply(status, {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}, headers)
        if errors:
            return self.reply(200, {"ok": False, "error": "invalid_blocks", "errors": errors})
        if method == "apps.connections.open":
            if not auth.startswith("Bearer xapp-"):
                return self.reply(200, {"ok": False, "error": "not_allowed_token_type"})
            return self.reply(200, {"ok": True, "url": f"ws://127.0.0.1:{WS_PORT[0]}/link"})
        if not auth.startswith("Bearer xoxb-"):
            return self.reply(200, {"ok": False, "error": "not_authed"})
        if method == "chat.postMessage":
            with LOCK:
                TS[0] += 1
                ts = f"{TS[0]}.000100"
                rec["ts"] = ts
            return self.reply(200, {"ok": True, "channel": body.get("channel"), "ts": ts})
        if method == "chat.update":
            return self.reply(200, {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")})
        if method == "chat.postEphemeral":
            return self.reply(200, {"ok": True, "message_ts": "1.1"})
        if method == "views.open":
            return self.reply(200, {"ok": True, "view": {"id": "V1"}})
        if method == "usergroups.users.list":
            g = body.get("usergroup")
            with LOCK:
                if g not in GROUPS:
                    return self.reply(200, {"ok": False, "error": "no_such_subteam"})
                return self.reply(200, {"ok": True, "users": GROUPS[g]})
        if method == "files.getUploadURLExternal":
            with LOCK:
                fid = f"F{len(FILES) + 1:08d}"
                FILES[fid] = {
                    "length": int(body["length"]),
                    "filename": body["filename"],
                    "alt_txt": body.get("alt_txt"),
                }
            return self.reply(200, {
                "ok": True,
                "upload_url": f"http://127.0.0.1:{PORT[0]}/_upload/{fid}",
                "file_id": fid,
            })
        if method == "files.completeUploadExternal":
            files = body["files"] if isinstance(body["files"], list) else json.loads(body["files"])
            return self.reply(200, {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]})
        if method == "users.info":
            return self.reply(200, {"ok": True, "user": {"id": body.get("user"), "name": "someone"}})
        return self.reply(200, {"ok": False, "error": "unknown_method"})


async def socket_handler(ws):
    SOCKET["conns"].append(ws)
    SOCKET["connects"] += 1
    try:
        await ws.send(json.dumps({"type": "hello", "num_connections": 1}))
        async for msg in ws:
            try:
                m = json.loads(msg)
            except ValueError:
                continue
            eid = m.get("envelope_id")
            if eid in SOCKET["acks"]:
                SOCKET["acks"][eid].set_result(m)
    finally:
        if ws in SOCKET["conns"]:
            SOCKET["conns"].remove(ws)


async def socket_send(payload):
    for _ in range(100):
        if SOCKET["conns"]:
            break
        await asyncio.sleep(0.1)
    if not SOCKET["conns"]:
        return {"acked": False, "error": "no connection"}
    ws = SOCKET["conns"][-1]
    eid = f"env-{time.time_ns()}"
    fut = asyncio.get_running_loop().create_future()
    SOCKET["acks"][eid] = fut
    await ws.send(json.dumps({
        "envelope_id": eid,
        "type": "interactive",
        "accepts_response_payload": payload.get("type") == "view_submission",
        "payload": payload,
    }))
    try:
        ack = await asyncio.wait_for(fut, 3)
        return {"acked": True, "ack": ack}
    except asyncio.TimeoutError:
        return {"acked": False}


async def socket_disconnect():
    n = 0
    for ws in list(SOCKET["conns"]):
        await ws.send(json.dumps({"type": "disconnect", "reason": "refresh_requested"}))
        n += 1
    return {"sent": n}


def run_ws():
    global LOOP
    LOOP = asyncio.new_event_loop()
    asyncio.set_event_loop(LOOP)

    async def main():
        server = await websockets.serve(socket_handler, "127.0.0.1", 0)
        WS_PORT[0] = server.sockets[0].getsockname()[1]
        await asyncio.Future()

    LOOP.run_until_complete(main())


if __name__ == "__main__":
    threading.Thread(target=run_ws, daemon=True).start()
    while not WS_PORT[0]:
        time.sleep(0.01)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    PORT[0] = httpd.server_address[1]
    print(f"READY {httpd.server_address[1]}", flush=True)
    # Stop when the test (our parent) closes stdin.
    threading.Thread(target=lambda: (sys.stdin.read(), httpd.shutdown()), daemon=True).start()
    httpd.serve_forever()

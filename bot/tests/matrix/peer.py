"""The reviewers' side of the Matrix tests: real matrix-nio clients (with
encryption) against the real Synapse the test kit started.

Driven by JSON lines on stdin, one answer line on stdout per command:
  {"op": "register", "user": "alice", "password": "…", "admin": false}
  {"op": "login", "user": "alice", "password": "…"}
  {"op": "create_room", "who": "alice", "encrypted": true, "invite": ["@bot:localhost"],
   "power": {"@carol:localhost": 50}}
  {"op": "join", "who": "bob", "room": "!…"}
  {"op": "react", "who": "alice", "room": "!…", "event_id": "$…", "key": "✅"}
  {"op": "reply", "who": "alice", "room": "!…", "root": "$…", "body": "deny no"}
  {"op": "events", "who": "alice", "room": "!…"}
  {"op": "accept_invites", "who": "dave"}   (joins every room dave is invited to)
  {"op": "rate_limit", "who": "admin", "user": "@bot:localhost", "per_second": 1, "burst": 1}
      (Synapse's admin API: that user's own message rate limit)
  {"op": "cross_signing", "who": "alice", "user": "@bot:localhost"}
      (that user's master key, and each device with whether its self-signing key signed it)
Each command syncs its client first, then uploads, queries and claims keys
and sends to-device messages (which nio's sync alone does not do).
Events come back as each client received them: `source` (decrypted when it
was encrypted), `type`, `encrypted` (it arrived as m.room.encrypted) and
`undecryptable`. The test sends commands as data: nothing here runs a shell.
"""

import asyncio
import hashlib
import hmac
import json
import sys
import time

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    MegolmEvent,
    RoomCreateResponse,
    RoomSendResponse,
    JoinResponse,
    LoginResponse,
)

HS = sys.argv[1]
SECRET = sys.argv[2]
STORE = sys.argv[3]

clients = {}
events = {}  # (who, room) -> [event]


async def register(cmd):
    async with aiohttp.ClientSession() as s:
        url = f"{HS}/_synapse/admin/v1/register"
        async with s.get(url) as r:
            nonce = (await r.json())["nonce"]
        admin = "admin" if cmd.get("admin") else "notadmin"
        # HMAC-SHA1 over nonce, user, password and admin, separated by NUL.
        mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(p.encode() for p in (nonce, cmd["user"], cmd["password"], admin)))
        body = {
            "nonce": nonce,
            "username": cmd["user"],
            "password": cmd["password"],
            "admin": bool(cmd.get("admin")),
            "mac": mac.hexdigest(),
        }
        async with s.post(url, json=body) as r:
            out = await r.json()
            if r.status != 200:
                raise RuntimeError(f"register {cmd['user']}: {r.status} {out}")
            return {"user_id": out["user_id"]}


def record(who):
    async def cb(room, event):
        src = dict(event.source)
        encrypted = bool(getattr(event, "decrypted", False)) or src.get("type") == "m.room.encrypted"
        entry = {
            "type": src.get("type"),
            "source": src,
            "encrypted": encrypted,
            "undecryptable": isinstance(event, MegolmEvent),
            "sender": event.sender,
            "event_id": event.event_id,
            # The relation as it travelled in clear text (outside the
            # ciphertext in an encrypted room).
            "relates_to": src.get("content", {}).get("m.relates_to"),
        }
        events.setdefault((who, room.room_id), []).append((entry, event))

    return cb


async def login(cmd):
    who = cmd["user"]
    uid = f"@{who}:localhost"
    cfg = AsyncClientConfig(store_sync_tokens=True, encryption_enabled=True)
    c = AsyncClient(HS, uid, store_path=STORE, config=cfg, device_id=None)
    r = await c.login(cmd["password"], device_name=f"{who}-nio")
    if not isinstance(r, LoginResponse):
        raise RuntimeError(f"login {who}: {r}")
    c.add_event_callback(record(who), Event)
    await c.sync(timeout=0, full_state=True)
    if c.should_upload_keys:
        await c.keys_upload()
    clients[who] = c
    return {"user_id": uid, "device_id": c.device_id}


async def settle(c, room=None):
    """One sync, and what nio's sync loop does besides syncing."""
    await c.sync(timeout=0)
    if c.should_upload_keys:
        await c.keys_upload()
    if c.should_query_keys:
        await c.keys_query()
    if room is not None and c.olm and room in c.rooms and c.rooms[room].encrypted:
        missing = c.get_missing_sessions(room)
        if missing:
            await c.keys_claim(missing)
    await c.send_to_device_messages()


async def create_room(cmd):
    c = clients[cmd["who"]]
    initial = []
    if cmd.get("encrypted"):
        initial.append(
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        )
    power = {"users": {}}
    for u, n in (cmd.get("power") or {}).items():
        power["users"][u] = n
    r = await c.room_create(
        invite=cmd.get("invite", []),
        initial_state=initial,
        power_level_override=power,
    )
    if not isinstance(r, RoomCreateResponse):
        raise RuntimeError(f"create room: {r}")
    await settle(c)
    return {"room_id": r.room_id}


async def join(cmd):
    c = clients[cmd["who"]]
    r = await c.join(cmd["room"])
    if not isinstance(r, JoinResponse):
        raise RuntimeError(f"join: {r}")
    await settle(c)
    return {"room_id": r.room_id}


async def send(c, room, content, kind="m.room.message"):
    await settle(c, room)
    sent_at_ms = time.time() * 1000.0
    r = await c.room_send(room, kind, content, ignore_unverified_devices=True)
    if not isinstance(r, RoomSendResponse):
        raise RuntimeError(f"send: {r}")
    return {"event_id": r.event_id, "sent_at_ms": sent_at_ms, "answered_at_ms": time.time() * 1000.0}


async def react(cmd):
    content = {
        "m.relates_to": {
            "rel_type": "m.annotation",
            "event_id": cmd["event_id"],
            "key": cmd["key"],
        }
    }
    return await send(clients[cmd["who"]], cmd["room"], content, "m.reaction")


async def reply(cmd):
    content = {
        "msgtype": "m.text",
        "body": cmd["body"],
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": cmd["root"],
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": cmd["root"]},
        },
    }
    return await send(clients[cmd["who"]], cmd["room"], content)


async def list_events(cmd):
    c = clients[cmd["who"]]
    await settle(c)
    out = []
    for i, (entry, ev) in enumerate(events.get((cmd["who"], cmd["room"]), [])):
        if isinstance(ev, MegolmEvent):
            # The key may have come after the message.
            try:
                dec = c.decrypt_event(ev)
            except Exception:
                dec = None
            if dec is not None and not isinstance(dec, MegolmEvent):
                entry = dict(entry, source=dict(dec.source), undecryptable=False, encrypted=True)
                events[(cmd["who"], cmd["room"])][i] = (entry, dec)
        out.append(entry)
    return {"events": out}


async def accept_invites(cmd):
    c = clients[cmd["who"]]
    await settle(c)
    joined = []
    for room_id in list(c.invited_rooms):
        r = await c.join(room_id)
        if not isinstance(r, JoinResponse):
            raise RuntimeError(f"join {room_id}: {r}")
        joined.append(r.room_id)
    if joined:
        await settle(c)
    return {"rooms": joined}


async def rate_limit(cmd):
    c = clients[cmd["who"]]
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{HS}/_synapse/admin/v1/users/{cmd['user']}/override_ratelimit",
            json={"messages_per_second": cmd["per_second"], "burst_count": cmd["burst"]},
            headers={"Authorization": f"Bearer {c.access_token}"},
        ) as r:
            out = await r.json()
            if r.status != 200:
                raise RuntimeError(f"override_ratelimit: {r.status} {out}")
    return out


async def cross_signing(cmd):
    c = clients[cmd["who"]]
    user = cmd["user"]
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{HS}/_matrix/client/v3/keys/query",
            json={"device_keys": {user: []}},
            headers={"Authorization": f"Bearer {c.access_token}"},
        ) as r:
            out = await r.json()
            if r.status != 200:
                raise RuntimeError(f"keys/query: {r.status} {out}")
    master = out.get("master_keys", {}).get(user, {}).get("keys", {})
    ssk = out.get("self_signing_keys", {}).get(user, {}).get("keys", {})
    ssk_ids = set(ssk.keys())
    devices = {}
    for dev, keys in out.get("device_keys", {}).get(user, {}).items():
        sigs = keys.get("signatures", {}).get(user, {})
        devices[dev] = bool(ssk_ids & set(sigs.keys()))
    return {"master": sorted(master.values()), "devices": devices}


async def whoami(cmd):
    return {"ok": True}


OPS = {
    "register": register,
    "login": login,
    "create_room": create_room,
    "join": join,
    "react": react,
    "reply": reply,
    "events": list_events,
    "accept_invites": accept_invites,
    "cross_signing": cross_signing,
    "rate_limit": rate_limit,
    "ping": whoami,
}


async def main():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        try:
            cmd = json.loads(line)
            out = await OPS[cmd["op"]](cmd)
            out["ok"] = True
        except Exception as e:  # the test reads the reason
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    for c in clients.values():
        await c.close()


asyncio.run(main())

"""Drives `holdpoint mcp` with the official MCP SDK's client.

Usage: drive.py HOLDPOINT_BINARY STEPS_JSON

STEPS_JSON is a list of {"op": "list"} or {"op": "call", "name": ..., "arguments": ...}.
Prints one JSON object per step, as soon as the step ends. The server gets
this process's environment and working directory.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client


async def main() -> None:
    binary, steps = sys.argv[1], json.loads(sys.argv[2])
    params = StdioServerParameters(
        command=binary, args=["mcp"], env=dict(os.environ), cwd=os.getcwd()
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for step in steps:
                if step["op"] == "list":
                    tools = (await session.list_tools()).tools
                    out = {
                        "tools": [
                            {"name": t.name, "input_schema": t.input_schema} for t in tools
                        ]
                    }
                else:
                    progress = []

                    async def on_progress(value, total, message, progress=progress):
                        progress.append(message)

                    try:
                        r = await session.call_tool(
                            step["name"], step["arguments"], progress_callback=on_progress
                        )
                        out = {
                            "is_error": bool(r.is_error),
                            "text": [getattr(c, "text", None) for c in r.content],
                            "structured": r.structured_content,
                            "progress": progress,
                        }
                    except Exception as e:  # a protocol-level error
                        out = {"rpc_error": str(e), "progress": progress}
                print(json.dumps(out), flush=True)


asyncio.run(main())

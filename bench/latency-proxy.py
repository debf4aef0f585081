#!/usr/bin/python3
"""latency-proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS

A TCP proxy on 127.0.0.1 that holds every chunk of bytes DELAY_MS before
passing it on, in each direction, keeping the order: a round trip through it
costs 2 * DELAY_MS more, as on a long-distance link, while bandwidth stays
that of loopback.  For bench/fetch.sh (issue 6: fetching 2,000 messages
through 20 ms each way).  LISTEN_PORT 0 picks a free port; the port is
printed on stdout as "port N" once listening.  Runs until killed.
"""
import asyncio
import sys
import time


async def pipe(reader, writer, delay):
    """Copies reader to writer, each chunk sent delay seconds after it came."""
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.create_task(sender())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data or None))
            if not data:
                break
        await task
    except (ConnectionError, OSError):
        task.cancel()


async def handle(client_reader, client_writer, target, delay):
    host, port = target
    try:
        server_reader, server_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer, delay),
                         pipe(server_reader, client_writer, delay),
                         return_exceptions=True)
    for w in (client_writer, server_writer):
        w.close()


async def main():
    listen_port = int(sys.argv[1])
    host, _, port = sys.argv[2].rpartition(":")
    delay = float(sys.argv[3]) / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (host, int(port)), delay),
        "127.0.0.1", listen_port)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main())

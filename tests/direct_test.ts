import assert from "node:assert/strict";
import { connect, listen } from "../mod.ts";
import { randomBytes, readAll, readExactly } from "./_helpers.ts";

Deno.test("listen() with a port echoes bytes to a raw Deno.connect peer", async () => {
  using listener = listen({ hostname: "127.0.0.1", port: 0 });
  assert.equal(listener.addr.transport, "tcp");
  assert.equal(listener.addr.hostname, "127.0.0.1");
  assert.ok(listener.addr.port > 0);
  const served = (async () => {
    using conn = await listener.accept();
    await conn.readable.pipeTo(conn.writable);
  })();
  using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const data = randomBytes(200_000);
  const [, echoed] = await Promise.all([
    (async () => {
      const writer = client.writable.getWriter();
      await writer.write(data);
      writer.releaseLock();
      await client.closeWrite();
    })(),
    readAll(client.readable),
  ]);
  await served;
  assert.deepEqual(echoed, data);
});

Deno.test("connect() with a port echoes bytes through a raw Deno.listen server", async () => {
  using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    using conn = await server.accept();
    await conn.readable.pipeTo(conn.writable);
  })();
  using client = await connect({ hostname: "127.0.0.1", port: server.addr.port });
  assert.equal(client.remoteAddr.port, server.addr.port);
  const data = randomBytes(200_000);
  const [, echoed] = await Promise.all([
    (async () => {
      const writer = client.writable.getWriter();
      await writer.write(data);
      writer.releaseLock();
      await client.closeWrite();
    })(),
    readAll(client.readable),
  ]);
  await served;
  assert.deepEqual(echoed, data);
});

Deno.test("connect() and listen() with ports talk to each other like Deno's", async () => {
  using listener = listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  using client = await connect({ hostname: "127.0.0.1", port: listener.addr.port });
  using server = await accepted;
  assert.deepEqual(server.remoteAddr, client.localAddr);
  const data = randomBytes(100_000);
  const writer = client.writable.getWriter();
  const reader = server.readable.getReader();
  const [, received] = await Promise.all([writer.write(data), readExactly(reader, data.length)]);
  writer.releaseLock();
  reader.releaseLock();
  assert.deepEqual(received, data);
  const buffer = new Uint8Array(8);
  assert.equal(await server.write(new TextEncoder().encode("pong")), 4);
  assert.equal(await client.read(buffer), 4);
  assert.equal(new TextDecoder().decode(buffer.subarray(0, 4)), "pong");
});

Deno.test("connect() with a port where nothing listens rejects with ConnectionRefused", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = probe.addr;
  probe.close();
  await assert.rejects(connect({ hostname: "127.0.0.1", port }), Deno.errors.ConnectionRefused);
});

// A gRPC client on grpc-js that runs interop cases against TARGET (vigil in
// front of grpc-go's interop server, which attaches error details to
// INVALID_ARGUMENT answers). Prints one JSON object per case:
// {"case": NAME, "ok": BOOL, "detail": TEXT}.
//
// Usage: node client.js TARGET [CASE...]
'use strict';
const grpc = require('@grpc/grpc-js');
const { types, enc, dec, payload, serviceDefinition } = require('./messages');

const target = process.argv[2];
const only = new Set(process.argv.slice(3));
const Client = grpc.makeGenericClientConstructor(serviceDefinition(), 'TestService');
const opts = { 'grpc.max_receive_message_length': 8 << 20, 'grpc.enable_retries': 0 };
const client = new Client(target, grpc.credentials.createInsecure(), opts);
const gzipClient = new Client(target, grpc.credentials.createInsecure(), { ...opts, 'grpc.default_compression_algorithm': 2 });

const deadline = (s) => new Date(Date.now() + s * 1000);
const expect = (cond, what) => { if (!cond) throw new Error(what); };
const unary = (c, method, req, md = new grpc.Metadata(), callOpts = {}) => new Promise((resolve, reject) => {
  const call = c[method](req, md, { deadline: deadline(10), ...callOpts }, (err, resp) => (err ? reject(err) : resolve({ resp, call })));
  call.on('status', (st) => { call.finalStatus = st; });
});
const collect = (call) => new Promise((resolve, reject) => {
  const msgs = [];
  call.on('data', (m) => msgs.push(m));
  call.on('error', reject);
  call.on('status', (st) => { if (st.code === 0) resolve({ msgs, status: st }); });
});
const codeOf = (p) => p.then(() => 'OK', (e) => e.code);

const cases = {
  async empty_unary() {
    const { resp } = await unary(client, 'EmptyCall', {});
    expect(Object.keys(resp).length === 0, 'non-empty');
  },
  async large_unary() {
    const { resp } = await unary(client, 'UnaryCall', { response_size: 314159, payload: payload(271828) });
    expect(resp.payload.body.length === 314159, 'size');
  },
  async large_messages() {
    const n = 3 << 20;
    const { resp } = await unary(client, 'UnaryCall', { response_size: n, payload: payload(n) }, undefined, { deadline: deadline(30) });
    expect(resp.payload.body.length === n, 'size');
  },
  async client_streaming() {
    const sizes = [27182, 8, 1828, 45904];
    const resp = await new Promise((resolve, reject) => {
      const call = client.StreamingInputCall(new grpc.Metadata(), { deadline: deadline(10) }, (err, r) => (err ? reject(err) : resolve(r)));
      for (const s of sizes) call.write({ payload: payload(s) });
      call.end();
    });
    expect(resp.aggregated_payload_size === 74922, 'aggregated ' + resp.aggregated_payload_size);
  },
  async server_streaming() {
    const sizes = [31415, 9, 2653, 58979];
    const call = client.StreamingOutputCall({ response_parameters: sizes.map((size) => ({ size })) }, new grpc.Metadata(), { deadline: deadline(10) });
    const { msgs } = await collect(call);
    expect(JSON.stringify(msgs.map((m) => m.payload.body.length)) === JSON.stringify(sizes), 'sizes');
  },
  async ping_pong() {
    const sizes = [31415, 9, 2653, 58979];
    const reqs = [27182, 8, 1828, 45904];
    const call = client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline(10) });
    const got = [];
    const next = () => new Promise((resolve, reject) => {
      call.once('data', resolve);
      call.once('error', reject);
    });
    for (let i = 0; i < 4; i++) {
      const p = next();
      call.write({ response_parameters: [{ size: sizes[i] }], payload: payload(reqs[i]) });
      got.push((await p).payload.body.length);
    }
    const done = collect(call);
    call.end();
    await done;
    expect(JSON.stringify(got) === JSON.stringify(sizes), 'sizes ' + got);
  },
  async empty_stream() {
    const call = client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline(10) });
    const done = collect(call);
    call.end();
    const { msgs } = await done;
    expect(msgs.length === 0, 'messages');
  },
  async custom_metadata() {
    const md = new grpc.Metadata();
    md.set('x-grpc-test-echo-initial', 'test_initial_metadata_value');
    md.set('x-grpc-test-echo-trailing-bin', Buffer.from([0x0a, 0x0b, 0x0a, 0x0b, 0x0a, 0x0b]));
    const initial = new Promise((resolve) => {
      const call = client.UnaryCall({ response_size: 314159, payload: payload(271828) }, md, { deadline: deadline(10) }, () => {});
      call.on('metadata', (m) => resolve(m));
      call.on('status', (st) => { initial.trailers = st.metadata; });
    });
    const im = await initial;
    expect(im.get('x-grpc-test-echo-initial')[0] === 'test_initial_metadata_value', 'initial metadata');
    const st = await new Promise((resolve) => {
      const call = client.UnaryCall({ response_size: 1 }, md, { deadline: deadline(10) }, () => {});
      call.on('status', resolve);
    });
    const tr = st.metadata.get('x-grpc-test-echo-trailing-bin')[0];
    expect(tr && Buffer.compare(tr, Buffer.from([0x0a, 0x0b, 0x0a, 0x0b, 0x0a, 0x0b])) === 0, 'trailing metadata');
  },
  async status_code_and_message() {
    for (const msg of ['test status message', '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n']) {
      const err = await unary(client, 'UnaryCall', { response_status: { code: 2, message: msg } }).then(() => null, (e) => e);
      expect(err && err.code === 2 && err.details === msg, 'got ' + (err && err.code) + ' ' + JSON.stringify(err && err.details));
    }
  },
  async error_details() {
    const err = await unary(client, 'UnaryCall', { response_status: { code: 3, message: 'with details' } }).then(() => null, (e) => e);
    expect(err && err.code === 3, 'code');
    const bin = err.metadata.get('grpc-status-details-bin')[0];
    expect(bin, 'no grpc-status-details-bin');
    const st = dec('RpcStatus')(bin);
    expect(st.code === 3 && st.message === 'with details', 'status ' + JSON.stringify(st));
    expect(st.details.length === 1 && st.details[0].type_url.endsWith('grpc.testing.Payload'), 'details');
  },
  async deadline_exceeded() {
    const call = client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline(0.5) });
    call.on('error', () => {});
    call.on('data', () => {});
    call.write({ response_parameters: [{ size: 1 }] });
    const code = await new Promise((resolve) => call.on('status', (st) => resolve(st.code)));
    expect(code === grpc.status.DEADLINE_EXCEEDED, 'code ' + code);
  },
  async cancel_after_begin() {
    const p = new Promise((resolve) => {
      const call = client.StreamingInputCall(new grpc.Metadata(), { deadline: deadline(10) }, (err) => resolve(err && err.code));
      setTimeout(() => call.cancel(), 100);
    });
    const code = await p;
    expect(code === grpc.status.CANCELLED, 'code ' + code);
  },
  async cancel_after_first_response() {
    const call = client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline(10) });
    const code = await new Promise((resolve) => {
      call.on('status', (st) => resolve(st.code));
      call.on('error', () => {});
      call.once('data', () => call.cancel());
      call.write({ response_parameters: [{ size: 31415 }], payload: payload(27182) });
    });
    expect(code === grpc.status.CANCELLED, 'code ' + code);
  },
  async gzip() {
    const { resp } = await unary(gzipClient, 'UnaryCall', { response_size: 314159, payload: payload(271828) });
    expect(resp.payload.body.length === 314159, 'size');
    const call = gzipClient.FullDuplexCall(new grpc.Metadata(), { deadline: deadline(10) });
    const done = collect(call);
    for (let i = 0; i < 3; i++) call.write({ response_parameters: [{ size: 1000 }], payload: payload(50000) });
    call.end();
    const { msgs } = await done;
    expect(msgs.length === 3, 'messages ' + msgs.length);
  },
  async unimplemented_method() {
    const code = await codeOf(unary(client, 'UnimplementedCall', {}));
    expect(code === grpc.status.UNIMPLEMENTED, 'code ' + code);
  },
  async vigil_health() {
    const health = new grpc.Client(target, grpc.credentials.createInsecure());
    const resp = await new Promise((resolve, reject) => health.makeUnaryRequest('/grpc.health.v1.Health/Check',
      enc('HealthCheckRequest'), dec('HealthCheckResponse'), { service: '' }, (err, r) => (err ? reject(err) : resolve(r))));
    health.close();
    expect(resp.status === 1, 'status ' + resp.status);
  },
  async stream_limit() {
    // Many more concurrent calls than the listener's max_concurrent_streams.
    const total = 4000;
    const window = 64;
    const failures = [];
    let next = 0;
    const worker = async () => {
      while (next < total) {
        next++;
        await unary(client, 'UnaryCall', { response_size: 10, payload: payload(10) }, undefined, { deadline: deadline(30) })
          .catch((e) => failures.push(e.code + ': ' + e.details));
      }
    };
    await Promise.all(Array.from({ length: window }, worker));
    expect(failures.length === 0, failures.length + ' of ' + total + ' failed: ' + failures.slice(0, 3));
  },
};

(async () => {
  for (const [name, fn] of Object.entries(cases)) {
    if (only.size && !only.has(name)) continue;
    const start = Date.now();
    let res;
    try {
      await fn();
      res = { case: name, ok: true };
    } catch (e) {
      res = { case: name, ok: false, detail: String(e && (e.stack || e.message || e)) };
    }
    res.seconds = (Date.now() - start) / 1000;
    console.log(JSON.stringify(res));
  }
  client.close();
  gzipClient.close();
})();

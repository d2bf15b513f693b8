// A gRPC backend on grpc-js: grpc.testing.TestService with the semantics of
// grpc-go's interop server, and grpc.health.v1.Health from npm's
// grpc-health-check.
//
// Prints "listening PORT" once serving. Commands on stdin, one a line:
//   status SERVICE SERVING|NOT_SERVING   set a health status ("-" is "")
// SIGTERM stops it gracefully (tryShutdown, then forceShutdown after 10 s).
//
// Flags: --port N, --id ID, --max-connection-age-ms N, --max-concurrent-streams N
'use strict';
const grpc = require('@grpc/grpc-js');
const { HealthImplementation } = require('grpc-health-check');
const readline = require('readline');
const { payload, serviceDefinition } = require('./messages');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

function echoMetadata(call) {
  const md = call.metadata;
  const initial = md.get('x-grpc-test-echo-initial');
  if (initial.length) {
    const out = new grpc.Metadata();
    out.set('x-grpc-test-echo-initial', initial[0]);
    call.sendMetadata(out);
  }
  const trailing = md.get('x-grpc-test-echo-trailing-bin');
  const tr = new grpc.Metadata();
  if (trailing.length) tr.set('x-grpc-test-echo-trailing-bin', trailing[0]);
  return tr;
}

function statusError(req, trailers) {
  const st = req.response_status;
  if (st && st.code) return { code: st.code, details: st.message, metadata: trailers };
  return null;
}

const sleep = (us) => new Promise((r) => setTimeout(r, us / 1000));

const impl = {
  EmptyCall(call, cb) {
    cb(null, {}, echoMetadata(call));
  },
  UnaryCall(call, cb) {
    const tr = echoMetadata(call);
    const err = statusError(call.request, tr);
    if (err) return cb(err);
    const resp = { payload: payload(call.request.response_size) };
    if (call.request.fill_server_id) resp.server_id = args.id || 'node';
    cb(null, resp, tr);
  },
  async StreamingOutputCall(call) {
    const tr = echoMetadata(call);
    for (const p of call.request.response_parameters) {
      if (p.interval_us) await sleep(p.interval_us);
      call.write({ payload: payload(p.size) });
    }
    const err = statusError(call.request, tr);
    if (err) return call.emit('error', err);
    call.end(tr);
  },
  StreamingInputCall(call, cb) {
    let total = 0;
    call.on('data', (m) => { total += m.payload ? m.payload.body.length : 0; });
    call.on('end', () => cb(null, { aggregated_payload_size: total }));
    call.on('error', () => {});
  },
  FullDuplexCall(call) {
    const tr = echoMetadata(call);
    let chain = Promise.resolve();
    let failed = false;
    call.on('data', (req) => {
      chain = chain.then(async () => {
        if (failed) return;
        const err = statusError(req, tr);
        if (err) { failed = true; call.emit('error', err); return; }
        for (const p of req.response_parameters) {
          if (p.interval_us) await sleep(p.interval_us);
          call.write({ payload: payload(p.size) });
        }
      });
    });
    call.on('end', () => chain.then(() => { if (!failed) call.end(tr); }));
    call.on('error', () => {});
  },
};

const options = {};
if (args['max-connection-age-ms']) {
  options['grpc.max_connection_age_ms'] = Number(args['max-connection-age-ms']);
  options['grpc.max_connection_age_grace_ms'] = 30000;
}
if (args['max-concurrent-streams']) options['grpc.max_concurrent_streams'] = Number(args['max-concurrent-streams']);
const server = new grpc.Server(options);
const def = serviceDefinition();
delete def.UnimplementedCall;
server.addService(def, impl);
const health = new HealthImplementation({ '': 'SERVING' });
health.addToServer(server);

server.bindAsync('127.0.0.1:' + (args.port || 0), grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('listening ' + port);
});

function stop() {
  const timer = setTimeout(() => { server.forceShutdown(); process.exit(0); }, 10000);
  server.tryShutdown(() => { clearTimeout(timer); process.exit(0); });
}
process.on('SIGTERM', stop);
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, service, status] = line.trim().split(/\s+/);
  if (cmd === 'status') {
    health.setStatus(service === '-' ? '' : service, status);
    console.log('ok');
  }
});
rl.on('close', stop);

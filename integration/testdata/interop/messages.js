// The grpc.testing and grpc.health.v1 messages vigil's interop tests use,
// for grpc-js programs, built with protobufjs from this subset of
// grpc/testing/messages.proto (field numbers as there).
'use strict';
const protobuf = require('protobufjs');

const root = protobuf.parse(`
syntax = "proto3";
package grpc.testing;
message Payload { int32 type = 1; bytes body = 2; }
message EchoStatus { int32 code = 1; string message = 2; }
message SimpleRequest {
  int32 response_type = 1; int32 response_size = 2; Payload payload = 3;
  EchoStatus response_status = 7; bool fill_server_id = 9;
}
message SimpleResponse { Payload payload = 1; string server_id = 4; }
message StreamingInputCallRequest { Payload payload = 1; }
message StreamingInputCallResponse { int32 aggregated_payload_size = 1; }
message ResponseParameters { int32 size = 1; int32 interval_us = 2; }
message StreamingOutputCallRequest {
  int32 response_type = 1; repeated ResponseParameters response_parameters = 2;
  Payload payload = 3; EchoStatus response_status = 7;
}
message StreamingOutputCallResponse { Payload payload = 1; }
message Empty {}
message RpcStatus { int32 code = 1; string message = 2; repeated Any details = 3; }
message Any { string type_url = 1; bytes value = 2; }
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse { int32 status = 1; }
`, { keepCase: true }).root;

const T = (name) => root.lookupType('grpc.testing.' + name);
const types = {};
for (const n of ['Payload', 'SimpleRequest', 'SimpleResponse', 'StreamingInputCallRequest',
  'StreamingInputCallResponse', 'StreamingOutputCallRequest', 'StreamingOutputCallResponse',
  'Empty', 'RpcStatus', 'HealthCheckRequest', 'HealthCheckResponse']) {
  types[n] = T(n);
}

const enc = (type) => (obj) => Buffer.from(types[type].encode(types[type].fromObject(obj)).finish());
const dec = (type) => (buf) => types[type].toObject(types[type].decode(buf), { defaults: true });

const payload = (size) => ({ type: 0, body: Buffer.alloc(size) });

// The TestService methods: path, streaming kinds and message types.
const methods = {
  EmptyCall: ['Empty', 'Empty', false, false],
  UnaryCall: ['SimpleRequest', 'SimpleResponse', false, false],
  StreamingOutputCall: ['StreamingOutputCallRequest', 'StreamingOutputCallResponse', false, true],
  StreamingInputCall: ['StreamingInputCallRequest', 'StreamingInputCallResponse', true, false],
  FullDuplexCall: ['StreamingOutputCallRequest', 'StreamingOutputCallResponse', true, true],
  UnimplementedCall: ['Empty', 'Empty', false, false],
};

function serviceDefinition() {
  const def = {};
  for (const [name, [req, resp, reqStream, respStream]] of Object.entries(methods)) {
    def[name] = {
      path: '/grpc.testing.TestService/' + name,
      requestStream: reqStream,
      responseStream: respStream,
      requestSerialize: enc(req),
      requestDeserialize: dec(req),
      responseSerialize: enc(resp),
      responseDeserialize: dec(resp),
    };
  }
  return def;
}

module.exports = { types, enc, dec, payload, serviceDefinition };

package grpcproxy

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// frame is one gRPC message, kept as the raw bytes grpc-go read from the
// wire (after decompression): the proxy never unmarshals what it forwards.
type frame struct {
	data mem.BufferSlice
}

// free releases the frame's buffers if they were not handed on.
func (f *frame) free() {
	if f.data != nil {
		f.data.Free()
		f.data = nil
	}
}

// codec is forced on the proxy's grpc.Server and on every backend call. For
// a *frame it passes bytes through untouched: Unmarshal keeps a reference to
// grpc-go's pooled receive buffers and Marshal hands that reference back to
// grpc-go, which frees the buffers once they are written, so a message is
// never copied between the client and the backend. Any other value is a
// real proto message (the proxy's own grpc.health.v1 service shares the
// server, and a forced codec applies to every service on it) and goes
// through grpc-go's proto codec.
//
// The codec is never registered globally: registering a raw codec under
// "proto" would break every other user of grpc-go in the process.
type codec struct {
	proto encoding.CodecV2
}

func newCodec() codec {
	return codec{proto: encoding.GetCodecV2(proto.Name)}
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		data := f.data
		// grpc-go owns the reference from here and frees it after writing.
		f.data = nil
		return data, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		// grpc-go frees data when Unmarshal returns; keep our own reference
		// until Marshal passes it on.
		data.Ref()
		f.data = data
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// Name is empty so that a backend call without an explicit content subtype
// goes out as plain "application/grpc", exactly as most clients send it
// (grpc-go derives the subtype of a forced codec from its name).
func (codec) Name() string { return "" }

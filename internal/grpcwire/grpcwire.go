// Package grpcwire is a gRPC codec that lets a caller handle protobuf
// messages in their wire form: a *Message is sent as its bytes, and
// received as a copy of the bytes that came, undecoded. Every other value
// goes through gRPC's own protobuf codec. Its name is "proto", so that a
// peer sees the usual content type (application/grpc+proto) and cannot
// tell the two apart.
//
// The gRPC import uses it to decode series straight from their bytes
// (forward.DecodeMetricpbWire) instead of building generated messages
// first; senders that replay bytes encoded once (benchmarks, the load
// generator) use it to send without encoding each time.
package grpcwire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	// The protobuf codec registers itself; Codec hands it the other values.
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Name is the codec's name: the protobuf codec's.
const Name = "proto"

// Message is one protobuf message in its wire form.
type Message struct {
	// B is the message's bytes. Receiving into a Message replaces them,
	// reusing B's memory when it is large enough, so a receiver that keeps
	// the bytes beyond its next receive copies them first.
	B []byte
}

// Codec is the codec: a server takes it with grpc.ForceServerCodecV2, a
// client call with grpc.ForceCodecV2.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// protoCodec is gRPC's protobuf codec.
func protoCodec() (encoding.CodecV2, error) {
	c := encoding.GetCodecV2(Name)
	if c == nil {
		return nil, fmt.Errorf("grpcwire: no %q codec is registered", Name)
	}
	return c, nil
}

// Marshal sends a *Message's bytes as they are (gRPC does not modify
// them, and they must not change until the send returns); anything else
// is marshalled by the protobuf codec.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*Message); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.B)}, nil
	}
	c, err := protoCodec()
	if err != nil {
		return nil, err
	}
	return c.Marshal(v)
}

// Unmarshal copies the received bytes into a *Message; anything else is
// unmarshalled by the protobuf codec.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*Message); ok {
		n := data.Len()
		if cap(m.B) < n {
			m.B = make([]byte, n)
		}
		m.B = m.B[:n]
		data.CopyTo(m.B)
		return nil
	}
	c, err := protoCodec()
	if err != nil {
		return err
	}
	return c.Unmarshal(data, v)
}

// Name is "proto".
func (Codec) Name() string { return Name }

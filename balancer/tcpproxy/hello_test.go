package tcpproxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

func clientHello(t testing.TB, sni string) []byte {
	t.Helper()
	h, err := certgen.ClientHello(&tls.Config{ServerName: sni, InsecureSkipVerify: sni == ""})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// feed writes chunks to one end of a pipe and returns the other.
func feed(t *testing.T, chunks ...[]byte) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() {
		for _, c := range chunks {
			if _, err := a.Write(c); err != nil {
				return
			}
		}
	}()
	return b
}

// splitHello re-frames a hello record's handshake message over records of
// at most n bytes each.
func splitHello(h []byte, n int) []byte {
	msg := h[5:]
	var out []byte
	for len(msg) > 0 {
		k := min(n, len(msg))
		out = append(out, 22, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

func TestReadHello(t *testing.T) {
	hello := clientHello(t, "db-a.example.com")
	bytewise := make([][]byte, len(hello))
	for i := range hello {
		bytewise[i] = hello[i : i+1]
	}
	big := make([]byte, 0, 32<<10)
	big = append(big, 22, 3, 1, 0x40, 0)         // a record of 16 KiB...
	big = append(big, 1, 0, 0x50, 0)             // ... starting a hello of 20 KiB
	big = append(big, make([]byte, 16<<10-4)...) //
	tests := []struct {
		name   string
		chunks [][]byte
		sni    string
		tls    bool
		err    error
	}{
		{"whole", [][]byte{hello}, "db-a.example.com", true, nil},
		{"a byte at a time", bytewise, "db-a.example.com", true, nil},
		{"over many records", [][]byte{splitHello(hello, 7)}, "db-a.example.com", true, nil},
		{"no sni", [][]byte{clientHello(t, "")}, "", true, nil},
		{"garbage", [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n")}, "", false, nil},
		{"a handshake record that is not tls 1.x", [][]byte{{22, 9, 9, 0, 5}}, "", false, nil},
		{"too large", [][]byte{big}, "", true, ErrHelloTooLarge},
		{"not a client hello", [][]byte{{22, 3, 1, 0, 4, 2, 0, 0, 0}}, "", true, ErrBadHello},
		{"a record of 0 bytes", [][]byte{{22, 3, 1, 0, 0}}, "", true, ErrBadHello},
		{"cut short", [][]byte{hello[:len(hello)/2]}, "", true, errCut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := feed(t, tt.chunks...)
			if tt.err == errCut {
				// The writer closes after its chunks.
				a, b := net.Pipe()
				t.Cleanup(func() { a.Close(); b.Close() })
				go func() { _, _ = a.Write(tt.chunks[0]); a.Close() }()
				c = b
			}
			data, sni, isTLS, err := readHello(c, 5*time.Second)
			switch {
			case tt.err == errCut:
				var he helloError
				if !errors.As(err, &he) {
					t.Fatalf("err %v, want a cut hello", err)
				}
				return
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("err %v, want %v", err, tt.err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if sni != tt.sni || isTLS != tt.tls {
				t.Errorf("sni %q tls %v, want %q %v", sni, isTLS, tt.sni, tt.tls)
			}
			if want := bytes.Join(tt.chunks, nil); isTLS && !bytes.Equal(data, want) {
				t.Errorf("the bytes read are not the bytes sent (%d vs %d)", len(data), len(want))
			}
		})
	}
}

var errCut = errors.New("cut")

// A client that says nothing (a server-speaks-first protocol) goes on as
// one without SNI once the hello timeout passes.
func TestReadHelloSilentClient(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	data, sni, isTLS, err := readHello(b, 50*time.Millisecond)
	if err != nil || isTLS || sni != "" || len(data) != 0 {
		t.Fatalf("silent client: %q %q %v %v", data, sni, isTLS, err)
	}
}

func FuzzParseHello(f *testing.F) {
	hello := clientHello(f, "db-a.example.com")
	f.Add(hello)
	f.Add(splitHello(hello, 5))
	f.Add(hello[:40])
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		sni, need, err := parseHello(b)
		if err != nil {
			return
		}
		if need < 0 {
			t.Fatalf("need %d", need)
		}
		if need > 0 {
			// More bytes must not make a complete parse fail to see
			// what it needed: parsing a prefix never reads past it.
			if sni != "" {
				t.Fatalf("sni %q before the hello is whole", sni)
			}
			return
		}
		if len(sni) > maxServerNameSize {
			t.Fatalf("server name of %d bytes", len(sni))
		}
		// A whole hello parses the same with anything after it.
		sni2, need2, err2 := parseHello(append(append([]byte(nil), b...), 0xff, 0xff))
		if sni2 != sni || need2 != 0 || err2 != nil {
			t.Fatalf("trailing bytes changed the parse: %q %d %v", sni2, need2, err2)
		}
	})
}

func BenchmarkParseHello(b *testing.B) {
	hello := clientHello(b, "db-a.example.com")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseHello(hello); err != nil {
			b.Fatal(err)
		}
	}
}

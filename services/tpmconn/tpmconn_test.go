package tpmconn_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/tpmconn"
)

// The whole point of the package: its channels plug into go-attestation.
var _ attest.CommandChannelTPM20 = tpmconn.Channel(nil)

func TestParseAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    tpmconn.Addr
		wantErr bool
	}{
		{in: "/dev/tpmrm0", want: tpmconn.Addr{Kind: tpmconn.KindDevice, Path: "/dev/tpmrm0"}},
		{in: "/dev//tpm0", want: tpmconn.Addr{Kind: tpmconn.KindDevice, Path: "/dev/tpm0"}},
		{in: "swtpm:127.0.0.1:2321", want: tpmconn.Addr{Kind: tpmconn.KindSwtpmTCP, HostPort: "127.0.0.1:2321"}},
		{in: "swtpm:[::1]:2321", want: tpmconn.Addr{Kind: tpmconn.KindSwtpmTCP, HostPort: "[::1]:2321"}},
		{in: "swtpm:tpm.example:2321", want: tpmconn.Addr{Kind: tpmconn.KindSwtpmTCP, HostPort: "tpm.example:2321"}},
		{in: "unix:/run/swtpm/0.sock", want: tpmconn.Addr{Kind: tpmconn.KindUnix, Path: "/run/swtpm/0.sock"}},
		{in: "unix:rel.sock", want: tpmconn.Addr{Kind: tpmconn.KindUnix, Path: "rel.sock"}},
		{in: "", wantErr: true},
		{in: "tpmrm0", wantErr: true},
		{in: "dev/tpmrm0", wantErr: true},
		{in: "swtpm:", wantErr: true},
		{in: "swtpm:127.0.0.1", wantErr: true},
		{in: "swtpm::2321", wantErr: true},
		{in: "swtpm:127.0.0.1:0", wantErr: true},
		{in: "swtpm:127.0.0.1:65536", wantErr: true},
		{in: "swtpm:127.0.0.1:http", wantErr: true},
		{in: "unix:", wantErr: true},
		{in: "tcp:127.0.0.1:2321", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := tpmconn.ParseAddr(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, tpmconn.ErrInvalidAddr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			again, err := tpmconn.ParseAddr(got.String())
			require.NoError(t, err, "String() must round-trip")
			require.Equal(t, got, again)
		})
	}
}

func TestOpenRejectsInvalidAddress(t *testing.T) {
	t.Parallel()
	_, err := tpmconn.Open("tpmrm0")
	require.ErrorIs(t, err, tpmconn.ErrInvalidAddr)
	_, err = tpmconn.New(tpmconn.Config{Addr: "swtpm:127.0.0.1:1", Timeout: -1})
	require.Error(t, err)
}

// fakeTPM is a stream server that answers each command with respond(cmd), written in small
// pieces with pauses so that the client has to reassemble the response.
type fakeTPM struct {
	ln       net.Listener
	respond  func(cmd []byte) []byte
	commands chan []byte
}

func startFake(t *testing.T, network string, respond func(cmd []byte) []byte) (*fakeTPM, string) {
	t.Helper()
	var (
		ln   net.Listener
		err  error
		addr string
	)
	switch network {
	case "tcp":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr = "swtpm:" + ln.Addr().String()
	case "unix":
		p := filepath.Join(t.TempDir(), "tpm.sock")
		ln, err = net.Listen("unix", p)
		require.NoError(t, err)
		addr = "unix:" + p
	}
	f := &fakeTPM{ln: ln, respond: respond, commands: make(chan []byte, 16)}
	t.Cleanup(func() { _ = ln.Close() })
	go f.serve()
	return f, addr
}

func (f *fakeTPM) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

func (f *fakeTPM) handle(c net.Conn) {
	defer c.Close()
	for {
		var hdr [10]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		cmd := make([]byte, binary.BigEndian.Uint32(hdr[2:6]))
		copy(cmd, hdr[:])
		if _, err := io.ReadFull(c, cmd[10:]); err != nil {
			return
		}
		f.commands <- cmd
		resp := f.respond(cmd)
		for len(resp) > 0 {
			n := min(3, len(resp))
			if _, err := c.Write(resp[:n]); err != nil {
				return
			}
			resp = resp[n:]
			time.Sleep(time.Millisecond)
		}
	}
}

func response(rc uint32, body []byte) []byte {
	b := make([]byte, 10+len(body))
	binary.BigEndian.PutUint16(b[0:2], 0x8001)
	binary.BigEndian.PutUint32(b[2:6], uint32(len(b)))
	binary.BigEndian.PutUint32(b[6:10], rc)
	copy(b[10:], body)
	return b
}

func command(code uint32, body []byte) []byte {
	b := make([]byte, 10+len(body))
	binary.BigEndian.PutUint16(b[0:2], 0x8001)
	binary.BigEndian.PutUint32(b[2:6], uint32(len(b)))
	binary.BigEndian.PutUint32(b[6:10], code)
	copy(b[10:], body)
	return b
}

func TestSocketFraming(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			// The fake echoes the command body back, so each response is tied to its command.
			_, addr := startFake(t, network, func(cmd []byte) []byte { return response(0, cmd[10:]) })
			ch, err := tpmconn.Open(addr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = ch.Close() })

			log, err := ch.MeasurementLog()
			require.NoError(t, err)
			require.Nil(t, log, "swtpm has no event log")

			n, err := ch.Read(make([]byte, 16))
			require.Equal(t, 0, n)
			require.ErrorIs(t, err, io.EOF, "nothing to read before a command")

			for i, size := range []int{0, 1, 100, 4086} {
				body := bytes.Repeat([]byte{byte(i + 1)}, size)
				cmd := command(0x17b, body)
				n, err := ch.Write(cmd)
				require.NoError(t, err)
				require.Equal(t, len(cmd), n)

				got, err := io.ReadAll(ch)
				require.NoError(t, err)
				require.Equal(t, response(0, body), got)
			}

			// A short read leaves the rest for the next Read; a new command discards it.
			_, err = ch.Write(command(0x17b, []byte("abcdef")))
			require.NoError(t, err)
			buf := make([]byte, 12)
			n, err = ch.Read(buf)
			require.NoError(t, err)
			require.Equal(t, 12, n)
			require.Equal(t, []byte("ab"), buf[10:12])
			_, err = ch.Write(command(0x17b, []byte("xyz")))
			require.NoError(t, err)
			got, err := io.ReadAll(ch)
			require.NoError(t, err)
			require.Equal(t, response(0, []byte("xyz")), got)
		})
	}
}

func TestSocketRejectsPartialCommands(t *testing.T) {
	t.Parallel()
	_, addr := startFake(t, "tcp", func(cmd []byte) []byte { return response(0, nil) })
	ch, err := tpmconn.Open(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })

	_, err = ch.Write([]byte{0x80, 0x01, 0, 0})
	require.ErrorContains(t, err, "shorter than a TPM header")
	cmd := command(0x17b, []byte("abcd"))
	_, err = ch.Write(cmd[:12])
	require.ErrorContains(t, err, "one whole command")

	// Caller mistakes do not break the channel.
	_, err = ch.Write(cmd)
	require.NoError(t, err)
}

func TestSocketTimeoutBreaksChannel(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		// Accept and never answer: a hung TPM.
		c, err := ln.Accept()
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
	}()

	ch, err := tpmconn.New(tpmconn.Config{Addr: "swtpm:" + ln.Addr().String(), Timeout: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })

	start := time.Now()
	_, err = ch.Write(command(0x17b, nil))
	require.ErrorIs(t, err, tpmconn.ErrBroken)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)

	// The late response could be mistaken for the next one: the channel stays unusable.
	_, err = ch.Write(command(0x17b, nil))
	require.ErrorIs(t, err, tpmconn.ErrBroken)
	_, err = ch.Read(make([]byte, 10))
	require.ErrorIs(t, err, tpmconn.ErrBroken)
}

func TestSocketRejectsBadResponseHeader(t *testing.T) {
	t.Parallel()
	tests := map[string][]byte{
		"too small": {0x80, 0x01, 0, 0, 0, 5, 0, 0, 0, 0},
		"too large": {0x80, 0x01, 0x7f, 0, 0, 0, 0, 0, 0, 0},
	}
	for name, resp := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, addr := startFake(t, "tcp", func([]byte) []byte { return resp })
			ch, err := tpmconn.Open(addr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = ch.Close() })
			_, err = ch.Write(command(0x17b, nil))
			require.ErrorIs(t, err, tpmconn.ErrBroken)
			require.ErrorContains(t, err, "response header announces")
		})
	}
}

func TestClosedChannel(t *testing.T) {
	t.Parallel()
	_, addr := startFake(t, "unix", func([]byte) []byte { return response(0, nil) })
	ch, err := tpmconn.Open(addr)
	require.NoError(t, err)
	require.NoError(t, ch.Close())
	require.NoError(t, ch.Close(), "Close is idempotent")
	_, err = ch.Write(command(0x17b, nil))
	require.ErrorIs(t, err, tpmconn.ErrClosed)
}

func TestDialFailure(t *testing.T) {
	t.Parallel()
	_, err := tpmconn.Open("unix:" + filepath.Join(t.TempDir(), "absent.sock"))
	require.ErrorContains(t, err, "connect to unix:")
}

// go-tpm's transport (the TPMDirect API the attestor-side helpers use) runs over a Channel.
func TestGoTPMTransportOverSocket(t *testing.T) {
	t.Parallel()
	random := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	fake, addr := startFake(t, "tcp", func(cmd []byte) []byte {
		// TPM2_GetRandom response: TPM2B_DIGEST (uint16 size + bytes).
		body := append(binary.BigEndian.AppendUint16(nil, uint16(len(random))), random...)
		return response(0, body)
	})
	ch, err := tpmconn.Open(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })

	rsp, err := tpm2.GetRandom{BytesRequested: uint16(len(random))}.Execute(transport.FromReadWriter(ch))
	require.NoError(t, err)
	require.Equal(t, random, rsp.RandomBytes.Buffer)

	cmd := <-fake.commands
	require.Equal(t, uint32(tpm2.TPMCCGetRandom), binary.BigEndian.Uint32(cmd[6:10]))
}

func TestDevice(t *testing.T) {
	t.Parallel()
	// A regular file stands in for the character device: the channel passes bytes through.
	dir := t.TempDir()
	dev := filepath.Join(dir, "tpmrm0")
	require.NoError(t, os.WriteFile(dev, nil, 0o600))
	logPath := filepath.Join(dir, "binary_bios_measurements")

	ch, err := tpmconn.New(tpmconn.Config{Addr: dev, MeasurementLogPath: logPath})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ch.Close() })

	log, err := ch.MeasurementLog()
	require.NoError(t, err)
	require.Nil(t, log, "a missing log is no log, not an error")

	require.NoError(t, os.WriteFile(logPath, []byte("events"), 0o600))
	log, err = ch.MeasurementLog()
	require.NoError(t, err)
	require.Equal(t, []byte("events"), log)

	cmd := command(0x17b, []byte("x"))
	_, err = ch.Write(cmd)
	require.NoError(t, err)
	written, err := os.ReadFile(dev)
	require.NoError(t, err)
	require.Equal(t, cmd, written)

	_, err = tpmconn.Open(filepath.Join(dir, "absent"))
	require.True(t, errors.Is(err, os.ErrNotExist), "got %v", err)
}

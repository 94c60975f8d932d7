// Package tpmconn opens the command channel to a TPM 2.0 — a kernel device such as /dev/tpmrm0,
// or an swtpm server socket over TCP or a unix socket — as one type that go-attestation
// (attest.OpenConfig.CommandChannel) and go-tpm (transport.FromReadWriter) both accept, so the
// node agent and the tests run the very same TPM code against real and simulated TPMs.
package tpmconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Address prefixes understood by Open. A device is named by its absolute path.
const (
	// PrefixSwtpm selects swtpm's TCP server port: "swtpm:HOST:PORT".
	PrefixSwtpm = "swtpm:"
	// PrefixUnix selects swtpm's unixio server socket: "unix:PATH".
	PrefixUnix = "unix:"
)

// DefaultMeasurementLogPath is where Linux exposes the firmware's TCG event log of the first TPM.
const DefaultMeasurementLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

const (
	// headerSize is the TPM 2.0 response header: tag (2), size (4), response code (4).
	headerSize = 10
	// maxMessageSize bounds what a peer can make us allocate. TPM 2.0 implementations use
	// 4 KiB buffers (swtpm and libtpms included); 64 KiB leaves room for any real TPM.
	maxMessageSize = 64 << 10

	defaultTimeout     = 2 * time.Minute
	defaultDialTimeout = 10 * time.Second
)

// Channel is an open command channel to one TPM. It satisfies go-attestation's
// attest.CommandChannelTPM20. A Channel carries one command at a time; it is safe for
// concurrent use only in the sense that concurrent calls are serialised.
type Channel interface {
	io.ReadWriteCloser
	// MeasurementLog returns the firmware event log of the TPM, or nil when there is none
	// (swtpm, or a device whose kernel exposes no log).
	MeasurementLog() ([]byte, error)
}

// Kind says how a TPM is reached.
type Kind int

// The kinds of address Open understands.
const (
	KindDevice Kind = iota + 1
	KindSwtpmTCP
	KindUnix
)

func (k Kind) String() string {
	switch k {
	case KindDevice:
		return "device"
	case KindSwtpmTCP:
		return "swtpm-tcp"
	case KindUnix:
		return "unix"
	default:
		return "unknown"
	}
}

// Addr is a parsed TPM address.
type Addr struct {
	Kind Kind
	// Path is the device path (KindDevice) or the socket path (KindUnix).
	Path string
	// HostPort is "host:port" for KindSwtpmTCP.
	HostPort string
}

// String returns the address in the form ParseAddr accepts.
func (a Addr) String() string {
	switch a.Kind {
	case KindDevice:
		return a.Path
	case KindSwtpmTCP:
		return PrefixSwtpm + a.HostPort
	case KindUnix:
		return PrefixUnix + a.Path
	default:
		return ""
	}
}

// ErrInvalidAddr is wrapped by every address validation error.
var ErrInvalidAddr = errors.New("invalid TPM address")

// ParseAddr validates a TPM address: an absolute device path ("/dev/tpmrm0"),
// "swtpm:HOST:PORT" or "unix:PATH". It touches nothing; Open does.
func ParseAddr(addr string) (Addr, error) {
	switch {
	case addr == "":
		return Addr{}, fmt.Errorf("%w: empty (want /dev/tpmrm0, swtpm:HOST:PORT or unix:PATH)", ErrInvalidAddr)
	case strings.HasPrefix(addr, PrefixSwtpm):
		hp := strings.TrimPrefix(addr, PrefixSwtpm)
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return Addr{}, fmt.Errorf("%w %q: want swtpm:HOST:PORT: %w", ErrInvalidAddr, addr, err)
		}
		if host == "" {
			return Addr{}, fmt.Errorf("%w %q: missing host", ErrInvalidAddr, addr)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return Addr{}, fmt.Errorf("%w %q: port must be 1-65535", ErrInvalidAddr, addr)
		}
		return Addr{Kind: KindSwtpmTCP, HostPort: net.JoinHostPort(host, port)}, nil
	case strings.HasPrefix(addr, PrefixUnix):
		p := strings.TrimPrefix(addr, PrefixUnix)
		if p == "" {
			return Addr{}, fmt.Errorf("%w %q: missing socket path", ErrInvalidAddr, addr)
		}
		return Addr{Kind: KindUnix, Path: p}, nil
	case filepath.IsAbs(addr):
		return Addr{Kind: KindDevice, Path: filepath.Clean(addr)}, nil
	default:
		return Addr{}, fmt.Errorf("%w %q: want an absolute device path (/dev/tpmrm0), swtpm:HOST:PORT or unix:PATH", ErrInvalidAddr, addr)
	}
}

// Config configures a channel. Only Addr is required.
type Config struct {
	// Addr is the TPM address, see ParseAddr.
	Addr string
	// Timeout bounds one command on a socket, from sending it to the last byte of the
	// response. Real TPMs take tens of seconds to generate RSA keys, hence the generous
	// default of 2 minutes. Devices block in the kernel, which has its own timeouts.
	Timeout time.Duration
	// DialTimeout bounds connecting to a socket (default 10 s).
	DialTimeout time.Duration
	// MeasurementLogPath is the event log returned for a device (default
	// DefaultMeasurementLogPath). Sockets never have one.
	MeasurementLogPath string
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.MeasurementLogPath == "" {
		c.MeasurementLogPath = DefaultMeasurementLogPath
	}
}

func (c *Config) validate() (Addr, error) {
	if c.Timeout < 0 || c.DialTimeout < 0 {
		return Addr{}, errors.New("tpmconn: timeouts must not be negative")
	}
	return ParseAddr(c.Addr)
}

// Open opens the TPM at addr with default settings; see New.
func Open(addr string) (Channel, error) {
	return New(Config{Addr: addr})
}

// New opens the TPM described by cfg. For a socket it connects now, so a wrong address fails
// here rather than at the first command. swtpm serves one connection at a time: a second
// Channel to the same swtpm blocks on its first command until the first Channel is closed.
func New(cfg Config) (Channel, error) {
	cfg.setDefaults()
	a, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	switch a.Kind {
	case KindDevice:
		f, err := os.OpenFile(a.Path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("tpmconn: open TPM device: %w", err)
		}
		return &deviceChannel{f: f, logPath: cfg.MeasurementLogPath}, nil
	case KindSwtpmTCP:
		return dial("tcp", a.HostPort, a, cfg)
	case KindUnix:
		return dial("unix", a.Path, a, cfg)
	default:
		return nil, fmt.Errorf("%w: unknown kind %v", ErrInvalidAddr, a.Kind)
	}
}

// deviceChannel passes commands straight to a kernel TPM device: the kernel already frames
// each write as one command and each read as its response, exactly as go-tpm expects.
type deviceChannel struct {
	f       *os.File
	logPath string
}

func (d *deviceChannel) Read(p []byte) (int, error)  { return d.f.Read(p) }
func (d *deviceChannel) Write(p []byte) (int, error) { return d.f.Write(p) }
func (d *deviceChannel) Close() error                { return d.f.Close() }

// MeasurementLog returns the kernel's copy of the firmware event log, or nil if the kernel
// exposes none (no securityfs, or a TPM the firmware did not measure into).
func (d *deviceChannel) MeasurementLog() ([]byte, error) {
	b, err := os.ReadFile(d.logPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tpmconn: read measurement log: %w", err)
	}
	return b, nil
}

// ErrBroken is returned by a socket channel after an I/O error or timeout left the stream in
// an unknown state: a late response could otherwise be taken for the answer to the next
// command. Open a new channel.
var ErrBroken = errors.New("tpmconn: channel broken by an earlier error")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("tpmconn: channel closed")

// socketChannel speaks to swtpm's server socket, which is a byte stream without message
// boundaries: Write sends one command and reads back the whole response, so that the
// following Read (go-tpm reads once into a 4 KiB buffer) sees a complete message.
type socketChannel struct {
	addr    Addr
	timeout time.Duration

	mu     sync.Mutex
	conn   net.Conn
	resp   []byte // unread part of the last response
	broken error
	closed bool
}

func dial(network, address string, a Addr, cfg Config) (*socketChannel, error) {
	conn, err := net.DialTimeout(network, address, cfg.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("tpmconn: connect to %s: %w", a, err)
	}
	return &socketChannel{addr: a, conn: conn, timeout: cfg.Timeout}, nil
}

// Write sends p, which must be exactly one complete TPM command, and waits for its response.
// A response not yet read in full is discarded.
func (s *socketChannel) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	if len(p) < headerSize {
		return 0, fmt.Errorf("tpmconn: command of %d bytes is shorter than a TPM header", len(p))
	}
	if size := binary.BigEndian.Uint32(p[2:6]); int64(size) != int64(len(p)) {
		return 0, fmt.Errorf("tpmconn: write holds %d bytes but the command header says %d: write one whole command at a time", len(p), size)
	}
	s.resp = nil
	if err := s.conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return 0, s.fail(fmt.Errorf("set deadline: %w", err))
	}
	if _, err := s.conn.Write(p); err != nil {
		return 0, s.fail(fmt.Errorf("send command: %w", err))
	}
	resp, err := readResponse(s.conn)
	if err != nil {
		return 0, s.fail(err)
	}
	s.resp = resp
	return len(p), nil
}

// readResponse reads one response: the header, then as many bytes as the header announces.
func readResponse(r io.Reader) ([]byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxMessageSize {
		return nil, fmt.Errorf("response header announces %d bytes (want %d to %d)", size, headerSize, maxMessageSize)
	}
	resp := make([]byte, size)
	copy(resp, hdr[:])
	if _, err := io.ReadFull(r, resp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	return resp, nil
}

// Read returns the response of the last command. It returns io.EOF once that response has
// been read in full, and before any command was written.
func (s *socketChannel) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	if len(s.resp) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.resp)
	s.resp = s.resp[n:]
	return n, nil
}

// Close closes the connection, which lets swtpm accept its next client.
func (s *socketChannel) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.resp = nil
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("tpmconn: close %s: %w", s.addr, err)
	}
	return nil
}

// MeasurementLog returns nil: swtpm has no firmware, hence no event log.
func (s *socketChannel) MeasurementLog() ([]byte, error) { return nil, nil }

func (s *socketChannel) usable() error {
	if s.closed {
		return ErrClosed
	}
	return s.broken
}

// fail marks the channel broken and closes the connection, so that swtpm is free for the
// next client; the error returned wraps both ErrBroken and the cause.
func (s *socketChannel) fail(err error) error {
	s.broken = fmt.Errorf("%w: %s: %w", ErrBroken, s.addr, err)
	s.resp = nil
	_ = s.conn.Close()
	return s.broken
}

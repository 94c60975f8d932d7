package datasource

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/attestboot/attestboot/metadata/internal/render"
	"github.com/attestboot/attestboot/services/inventory"
)

// keyFields maps cloud-init's phone_home key fields to the key types each may carry.
var keyFields = map[string]func(string) bool{
	"pub_key_rsa":     func(t string) bool { return t == "ssh-rsa" },
	"pub_key_ecdsa":   func(t string) bool { return strings.HasPrefix(t, "ecdsa-sha2-") },
	"pub_key_ed25519": func(t string) bool { return t == "ssh-ed25519" },
}

var keyTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$`)

// maxKeyBlob bounds one decoded public key (an RSA-16384 key is about 2 KiB).
const maxKeyBlob = 8 << 10

// errMalformed is a phone-home the service refuses with 400.
var errMalformed = errors.New("malformed phone-home")

// PhoneHomeReport is what a phone-home form says, after checking.
type PhoneHomeReport struct {
	Keys       []inventory.HostKey
	InstanceID string
	Hostname   string
}

// ParsePhoneHome checks cloud-init's phone_home form fields: every key field is "N/A", empty,
// or an OpenSSH public key line of the field's type whose encoded blob names that type; at least
// one known field is present. Unknown fields are ignored.
func ParsePhoneHome(form map[string][]string) (PhoneHomeReport, error) {
	var rep PhoneHomeReport
	known := 0
	for _, f := range render.PhoneHomeFields {
		if len(form[f]) > 0 {
			known++
		}
		if len(form[f]) > 1 {
			return rep, fmt.Errorf("%w: field %s given %d times", errMalformed, f, len(form[f]))
		}
	}
	if known == 0 {
		return rep, fmt.Errorf("%w: none of the phone_home fields", errMalformed)
	}
	get := func(f string) string {
		if v := form[f]; len(v) == 1 && v[0] != "N/A" {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	for _, f := range []string{"pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519"} {
		line := get(f)
		if line == "" {
			continue
		}
		k, err := parseKeyLine(line)
		if err != nil {
			return rep, fmt.Errorf("%w: %s: %w", errMalformed, f, err)
		}
		if !keyFields[f](k.Type) {
			return rep, fmt.Errorf("%w: %s holds a %s key", errMalformed, f, k.Type)
		}
		rep.Keys = append(rep.Keys, k)
	}
	rep.InstanceID, rep.Hostname = get("instance_id"), get("hostname")
	if len(rep.InstanceID) > 128 || len(rep.Hostname) > 255 {
		return rep, fmt.Errorf("%w: instance_id or hostname too long", errMalformed)
	}
	return rep, nil
}

func parseKeyLine(line string) (inventory.HostKey, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return inventory.HostKey{}, errors.New("not a public key line")
	}
	typ := fields[0]
	if !keyTypeRE.MatchString(typ) {
		return inventory.HostKey{}, errors.New("bad key type")
	}
	if base64.StdEncoding.DecodedLen(len(fields[1])) > maxKeyBlob {
		return inventory.HostKey{}, errors.New("key too long")
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return inventory.HostKey{}, errors.New("key is not base64")
	}
	// The wire format starts with the type as a length-prefixed string.
	if len(blob) < 4 {
		return inventory.HostKey{}, errors.New("key blob too short")
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != typ {
		return inventory.HostKey{}, errors.New("key blob does not match its type")
	}
	// The comment (cloud-init sends root@host) is dropped: it says nothing the inventory trusts.
	return inventory.HostKey{Type: typ, PublicKey: typ + " " + fields[1]}, nil
}

func (s *Server) phoneHome(w http.ResponseWriter, r *http.Request, node inventory.Node, tun inventory.Tunnel, addr netip.Addr) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxPhoneHomeBytes)
	if err := r.ParseForm(); err != nil {
		reason := "malformed_phone_home"
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			reason = "oversized_phone_home"
		}
		s.refuse(ctx, w, http.StatusBadRequest, node.ID, reason, map[string]any{"tunnel_id": tun.ID})
		return
	}
	rep, err := ParsePhoneHome(r.PostForm)
	if err != nil {
		s.refuse(ctx, w, http.StatusBadRequest, node.ID, "malformed_phone_home", map[string]any{"tunnel_id": tun.ID, "error": err.Error()})
		return
	}
	types := make([]string, 0, len(rep.Keys))
	for _, k := range rep.Keys {
		types = append(types, k.Type)
	}
	err = s.store.GroupTx(ctx, func(q *inventory.Queries) error {
		if _, err := q.MarkPhonedHome(ctx, tun.ID); err != nil {
			return err
		}
		if err := q.ReplaceHostKeys(ctx, node.ID, rep.Keys); err != nil {
			return err
		}
		if _, err := q.MarkNodeBooted(ctx, node.ID); err != nil {
			return err
		}
		_, err := q.AppendEvent(ctx, inventory.Event{NodeID: node.ID, Kind: EventBootCompleted, Service: eventService, Detail: map[string]any{
			"tunnel_id": tun.ID, "host_key_types": types,
			// The form's identity is never trusted; a mismatch is worth seeing.
			"instance_id_matches": rep.InstanceID == tun.ID, "reported_hostname": rep.Hostname,
		}})
		return err
	})
	if err != nil {
		s.unavailable(ctx, w, "phone-home", node.ID, err)
		return
	}
	// Secrets served only until phone-home are withheld from the next request on.
	s.cache.invalidate(addr)
	s.log.InfoContext(ctx, "node phoned home", "node", node.ID, "tunnel", tun.ID, "host_keys", types)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok\n"))
	// The answer leaves before the tunnel goes: flushed now, the close comes after CloseDelay.
	if err := http.NewResponseController(w).Flush(); err != nil {
		s.log.DebugContext(ctx, "flush phone-home answer", "err", err)
	}
	s.scheduleClose(node.ID, tun.ID, addr)
}

func (s *Server) scheduleClose(nodeID, tunnelID string, addr netip.Addr) {
	if s.closer == nil {
		s.log.Warn("no tunnelmgr configured: the tunnel stays open until it expires", "node", nodeID, "tunnel", tunnelID)
		return
	}
	s.baseMu.Lock()
	base := s.base
	s.baseMu.Unlock()
	s.closes.Add(1)
	go func() {
		defer s.closes.Done()
		// Shutdown does not cancel a pending close: the node has finished and its tunnel must go.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(base), s.cfg.CloseDelay+s.cfg.CloseTimeout)
		defer cancel()
		select {
		case <-time.After(s.cfg.CloseDelay):
		case <-ctx.Done():
		}
		if err := s.closer.CloseTunnel(ctx, tunnelID, "phone_home"); err != nil {
			s.log.Error("close tunnel after phone-home", "node", nodeID, "tunnel", tunnelID, "err", err)
			if _, err := s.store.AppendEvent(ctx, inventory.Event{NodeID: nodeID, Kind: EventCloseFailed, Service: eventService,
				Reason: "close_failed", Detail: map[string]any{"tunnel_id": tunnelID}}); err != nil {
				s.log.Error("record failed tunnel close", "err", err)
			}
			return
		}
		// The notification of the close invalidates it too; this needs no round trip.
		s.cache.invalidate(addr)
		s.log.Info("tunnel closed after phone-home", "node", nodeID, "tunnel", tunnelID)
	}()
}

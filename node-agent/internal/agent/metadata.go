package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Documents are the four cloud-init documents of this boot.
type Documents struct {
	MetaData, UserData, VendorData, NetworkConfig []byte
}

// zero overwrites the documents, which may hold secrets, once they are written out.
func (d *Documents) zero() {
	for _, b := range [][]byte{d.MetaData, d.UserData, d.VendorData, d.NetworkConfig} {
		clear(b)
	}
}

// maxDocument bounds what a node reads per document.
const maxDocument = 1 << 20

// errTooLarge is a document over maxDocument: a permanent failure.
var errTooLarge = errors.New("document larger than the limit")

type metadataClient struct {
	http *http.Client
	base string
}

func newMetadataClient(c *http.Client, base string) *metadataClient {
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	return &metadataClient{http: c, base: base}
}

// errStatus is a non-200 answer; 5xx and 403 (the peer may not be usable yet) are retried.
type errStatus struct {
	doc  string
	code int
}

func (e errStatus) Error() string { return fmt.Sprintf("GET %s: HTTP %d", e.doc, e.code) }

func retryableFetch(err error) bool {
	if errors.Is(err, errTooLarge) {
		return false // an answer, not a hiccup
	}
	var s errStatus
	if errors.As(err, &s) {
		return s.code >= 500 || s.code == http.StatusForbidden
	}
	return true // transport errors: the handshake may still be under way
}

func (m *metadataClient) get(ctx context.Context, doc string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+doc, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, errStatus{doc, resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxDocument {
		return nil, fmt.Errorf("GET %s: %w (%d bytes)", doc, errTooLarge, maxDocument)
	}
	return b, nil
}

func (m *metadataClient) fetchAll(ctx context.Context, b Backoff) (Documents, error) {
	var d Documents
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{"meta-data", &d.MetaData}, {"user-data", &d.UserData}, {"vendor-data", &d.VendorData}, {"network-config", &d.NetworkConfig}} {
		err := retry(ctx, b, retryableFetch, func(ctx context.Context) error {
			var err error
			*f.dst, err = m.get(ctx, f.name)
			return err
		})
		if err != nil {
			d.zero()
			return Documents{}, err
		}
	}
	return d, nil
}

// awaitPhoneHome waits until the metadata service closed the tunnel after the phone-home. When
// cloud-init does not phone home (no cloud-init run here, or its module not configured), the
// agent posts it itself, with the SSH host keys it finds.
func (m *metadataClient) awaitPhoneHome(ctx context.Context, cfg SeedConfig, tunnelID string) error {
	post := cfg.PhoneHome == PhoneHomeAgent
	if cfg.PhoneHome == PhoneHomeAuto {
		// cloud-init's phone_home runs in its final stage, which has returned: if it phoned
		// home, the service closes the tunnel within a second or so.
		wait, cancel := context.WithTimeout(ctx, autoPhoneHomeWait)
		post = m.waitClosed(wait) != nil
		cancel()
	}
	if post {
		// The service answered 200 after recording the boot; it closes the tunnel itself.
		// Waiting for that would only cost the probe's timeout once the peer is gone.
		tried := false
		return retry(ctx, Backoff{}, retryableFetch, func(ctx context.Context) error {
			// The service closes the tunnel only after recording a phone-home (or when it
			// expires): closed after our attempt, the answer was lost, not the phone-home —
			// under a storm's load the answer can take longer than the attempt's timeout. A
			// retry could only wait for a peer that is gone until the boot's deadline. The probe
			// gets as long as an attempt: a service too busy to answer within a second has not
			// closed anything.
			if tried && m.closed(ctx, phoneHomeTimeout) {
				return nil
			}
			tried = true
			return m.phoneHome(ctx, cfg.Root, tunnelID)
		})
	}
	return m.waitClosed(ctx)
}

// phoneHomeTimeout bounds one phone-home attempt.
const phoneHomeTimeout = 10 * time.Second

// autoPhoneHomeWait is how long the agent gives cloud-init's own phone-home to close the tunnel
// before it phones home itself.
const autoPhoneHomeWait = 5 * time.Second

// waitClosed polls until the tunnel is closed or ctx ends.
func (m *metadataClient) waitClosed(ctx context.Context) error {
	for !m.closed(ctx, time.Second) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("tunnel still open: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}

// closed probes the tunnel: it is closed once the service refuses, or gives no answer within
// wait.
func (m *metadataClient) closed(ctx context.Context, wait time.Duration) bool {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+"meta-data", nil)
	if err != nil {
		return false
	}
	resp, err := m.http.Do(req)
	if err != nil {
		// No answer: the peer is gone (unless the caller gave up, which is not an answer).
		return parent.Err() == nil
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusForbidden
}

// phoneHome posts what cloud-init's phone_home module would.
func (m *metadataClient) phoneHome(ctx context.Context, root, tunnelID string) error {
	form := url.Values{"instance_id": {tunnelID}}
	hostname, _ := os.Hostname()
	form.Set("hostname", hostname)
	form.Set("fqdn", hostname)
	for _, kt := range []string{"rsa", "ecdsa", "ed25519"} {
		v := "N/A"
		if b, err := os.ReadFile(filepath.Join(root, "etc/ssh", "ssh_host_"+kt+"_key.pub")); err == nil {
			v = strings.TrimSpace(string(b))
		}
		form.Set("pub_key_"+kt, v)
	}
	ctx, cancel := context.WithTimeout(ctx, phoneHomeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.base+"phone-home", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := m.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errStatus{"phone-home", resp.StatusCode}
	}
	return nil
}

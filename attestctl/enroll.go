package attestctl

import (
	"context"
	"crypto/x509"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

func runEnroll(a *app, args []string) error {
	fs := a.flags("enroll", "enroll NODE (--ek-cert FILE | --ek-pub FILE | --ek-sha256 HEX | --tpm ADDR)\n       attestctl enroll --csv FILE [--workers N]")
	certFile := fs.String("ek-cert", "", "EK certificate `file` (PEM or DER)")
	pubFile := fs.String("ek-pub", "", "EK public key `file` (PKIX PEM or DER, e.g. from tpm2_readpublic -f pem)")
	sum := fs.String("ek-sha256", "", "SHA-256 of the PKIX EK public key, 64 `hex` digits (as `attestctl ek read` prints)")
	tpm := fs.String("tpm", "", "read the EK from the TPM at `address` (/dev/tpmrm0, swtpm:HOST:PORT, unix:PATH)")
	csvFile := fs.String("csv", "", "enroll every row of `file`: node_id,hostname,mac,ek_sha256 or ek_cert (creates missing nodes)")
	workers := fs.Int("workers", 8, "rows enrolled in parallel with --csv")
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	if *csvFile != "" {
		if len(pos) > 0 || *certFile != "" || *pubFile != "" || *sum != "" || *tpm != "" {
			return usagef("enroll --csv takes no node and no EK flags: they come from the file")
		}
		if *workers < 1 || *workers > 64 {
			return usagef("enroll: --workers must be 1 to 64")
		}
		return a.enrollCSV(*csvFile, *workers)
	}
	if len(pos) != 1 {
		return usagef("enroll: name the node (or use --csv FILE)")
	}
	given := 0
	for _, s := range []string{*certFile, *pubFile, *sum, *tpm} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		return usagef("enroll: give exactly one of --ek-cert, --ek-pub, --ek-sha256, --tpm")
	}
	req := &inventoryv1.EnrollNodeRequest{NodeId: pos[0]}
	var ek *endorsementKey
	switch {
	case *certFile != "":
		ek, err = readEKCertFile(*certFile)
	case *pubFile != "":
		ek, err = readEKPubFile(*pubFile)
	case *tpm != "":
		ek, err = readTPMEK(*tpm)
	default:
		var b []byte
		if b, err = parseSHA256(*sum); err != nil {
			return usagef("enroll: %v", err)
		}
		req.Ek = &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: b}
	}
	if err != nil {
		return err
	}
	if ek != nil {
		setEK(req, ek)
	}
	enr, err := a.enroll(req)
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(enr)
	}
	return a.printEnrollment(enr)
}

// setEK sends the certificate when there is one (the attestor then keeps it), else the key.
func setEK(req *inventoryv1.EnrollNodeRequest, ek *endorsementKey) {
	if ek.cert != nil {
		req.Ek = &inventoryv1.EnrollNodeRequest_EkCertificate{EkCertificate: ek.cert.Raw}
		return
	}
	der, err := x509.MarshalPKIXPublicKey(ek.public)
	if err == nil {
		req.Ek = &inventoryv1.EnrollNodeRequest_EkPublicKey{EkPublicKey: der}
		return
	}
	req.Ek = &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: ek.sha256[:]}
}

func (a *app) enroll(req *inventoryv1.EnrollNodeRequest) (*inventoryv1.Enrollment, error) {
	var res *inventoryv1.EnrollNodeResponse
	err := a.inv("enroll node "+req.GetNodeId(), func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.EnrollNode(ctx, req)
		return err
	})
	return res.GetEnrollment(), err
}

// csvRow is one node of a bulk enrollment.
type csvRow struct {
	line     int
	nodeID   string
	hostname string
	mac      string
	ekSHA256 string
	ekCert   string // path, relative to the CSV file's directory
}

// csvResult is what became of one row.
type csvResult struct {
	Line     int    `json:"line"`
	NodeID   string `json:"node_id"`
	Created  bool   `json:"created"`
	EKSHA256 string `json:"ek_sha256,omitempty"`
	Error    string `json:"error,omitempty"`
	code     int
}

// readCSV reads rows of node_id,hostname,mac,ek where ek is either the EK's SHA-256 (64 hex
// digits) or the path of its certificate. A first row naming the columns (node_id, hostname,
// mac, ek_sha256, ek_cert, in any order) is a header; '#' starts a comment line.
func readCSV(path string) ([]csvRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &exitError{code: ExitError, err: fmt.Errorf("enroll --csv: %w", err)}
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	dir := filepath.Dir(path)
	cols := map[string]int{"node_id": 0, "hostname": 1, "mac": 2, "ek": 3}
	var rows []csvRow
	for first := true; ; first = false {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &exitError{code: ExitError, err: fmt.Errorf("enroll --csv %s: %w", path, err)}
		}
		if first && containsFold(rec, "node_id") {
			cols = map[string]int{}
			for i, name := range rec {
				cols[strings.ToLower(strings.TrimSpace(name))] = i
			}
			continue
		}
		line, _ := r.FieldPos(0)
		get := func(name string) string {
			if i, ok := cols[name]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		row := csvRow{line: line, nodeID: get("node_id"), hostname: get("hostname"), mac: get("mac"),
			ekSHA256: get("ek_sha256"), ekCert: get("ek_cert")}
		if ek := get("ek"); ek != "" {
			if _, err := parseSHA256(ek); err == nil {
				row.ekSHA256 = ek
			} else {
				row.ekCert = ek
			}
		}
		if row.ekCert != "" && !filepath.IsAbs(row.ekCert) {
			row.ekCert = filepath.Join(dir, row.ekCert)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func containsFold(rec []string, s string) bool {
	for _, v := range rec {
		if strings.EqualFold(strings.TrimSpace(v), s) {
			return true
		}
	}
	return false
}

// enrollRow creates the node if it is missing, then binds its EK.
func (a *app) enrollRow(row csvRow) csvResult {
	res := csvResult{Line: row.line, NodeID: row.nodeID}
	fail := func(err error) csvResult {
		res.Error, res.code = err.Error(), exitCode(err)
		if res.code == ExitUsage {
			res.code = ExitError // a bad row is bad data, not a bad command line
		}
		return res
	}
	if row.nodeID == "" {
		return fail(usagef("no node_id"))
	}
	req := &inventoryv1.EnrollNodeRequest{NodeId: row.nodeID}
	switch {
	case row.ekSHA256 != "" && row.ekCert != "":
		return fail(usagef("both ek_sha256 and ek_cert: give one"))
	case row.ekSHA256 != "":
		b, err := parseSHA256(row.ekSHA256)
		if err != nil {
			return fail(usagef("%v", err))
		}
		req.Ek = &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: b}
		res.EKSHA256 = hex.EncodeToString(b)
	case row.ekCert != "":
		ek, err := readEKCertFile(row.ekCert)
		if err != nil {
			return fail(err)
		}
		setEK(req, ek)
		res.EKSHA256 = hex.EncodeToString(ek.sha256[:])
	default:
		return fail(usagef("no EK: give ek_sha256 or ek_cert"))
	}
	if _, err := a.getNode(row.nodeID); status.Code(err) == codes.NotFound {
		node := &inventoryv1.Node{Id: row.nodeID, Hostname: row.hostname, Mac: row.mac, Enabled: true}
		err = a.inv("create node "+row.nodeID, func(ctx context.Context, c inventoryv1.InventoryServiceClient) error {
			_, err := c.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: node})
			return err
		})
		if err != nil {
			return fail(err)
		}
		res.Created = true
	} else if err != nil {
		return fail(err)
	}
	if _, err := a.enroll(req); err != nil {
		return fail(err)
	}
	return res
}

func (a *app) enrollCSV(path string, workers int) error {
	rows, err := readCSV(path)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return &exitError{code: ExitError, err: fmt.Errorf("enroll --csv %s: no rows", path)}
	}
	// Connect (and load credentials) once before the workers share the connection.
	if _, err := a.inventory(); err != nil {
		return err
	}
	prog := newProgress(a.env.Stderr, isTerminal(a.env.Stderr) && !a.cfg.JSON, len(rows))
	results := make([]csvResult, len(rows))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				results[i] = a.enrollRow(rows[i])
				prog.done(results[i])
			}
		})
	}
	for i := range rows {
		next <- i
	}
	close(next)
	wg.Wait()
	prog.finish()

	var enrolled, created, failed int
	codesSeen := map[int]bool{}
	for _, r := range results {
		switch {
		case r.Error != "":
			failed++
			codesSeen[r.code] = true
		default:
			enrolled++
			if r.Created {
				created++
			}
		}
	}
	if a.cfg.JSON {
		err = a.printJSON(map[string]any{"rows": len(rows), "enrolled": enrolled, "created": created, "failed": failed, "results": results})
	} else {
		_, err = fmt.Fprintf(a.env.Stdout, "%d rows: %d enrolled (%d nodes created), %d failed\n", len(rows), enrolled, created, failed)
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		code := ExitError
		if len(codesSeen) == 1 {
			for c := range codesSeen {
				code = c
			}
		}
		return &exitError{code: code, err: fmt.Errorf("enroll --csv %s: %d of %d rows failed", path, failed, len(rows)),
			hint: "fix the rows named above and run the same file again: rows already enrolled with the same EK succeed again"}
	}
	return nil
}

// progress reports a bulk enrollment: a bar redrawn in place on a terminal, one line per row
// otherwise (logs, CI).
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	total  int
	n, bad int
}

func newProgress(w io.Writer, tty bool, total int) *progress {
	return &progress{w: w, tty: tty, total: total}
}

func (p *progress) done(r csvResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	line := fmt.Sprintf("line %d: %s: enrolled", r.Line, r.NodeID)
	if r.Created {
		line += " (node created)"
	}
	if r.Error != "" {
		p.bad++
		line = fmt.Sprintf("line %d: %s: FAILED: %s", r.Line, r.NodeID, r.Error)
	}
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	if r.Error != "" {
		// Failures stay on screen above the bar.
		fmt.Fprintf(p.w, "\r\x1b[K%s\n", line)
	}
	const width = 30
	fill := width * p.n / p.total
	fmt.Fprintf(p.w, "\r\x1b[K[%s%s] %d/%d  failed %d", strings.Repeat("#", fill), strings.Repeat(".", width-fill), p.n, p.total, p.bad)
}

func (p *progress) finish() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

package attestctl

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"strings"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

func runEnrollment(a *app, args []string) error {
	return a.sub("enrollment", args, map[string]func([]string) error{
		"get":    a.enrollmentGet,
		"delete": a.enrollmentDelete,
	})
}

func (a *app) enrollmentGet(args []string) error {
	fs := a.flags("enrollment get", "enrollment get NODE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	var res *inventoryv1.GetEnrollmentResponse
	err = a.inv("get enrollment of "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) (err error) {
		res, err = c.GetEnrollment(ctx, &inventoryv1.GetEnrollmentRequest{NodeId: pos[0]})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res.GetEnrollment())
	}
	return a.printEnrollment(res.GetEnrollment())
}

func (a *app) printEnrollment(e *inventoryv1.Enrollment) error {
	t := a.table()
	t.row("node:", e.GetNodeId())
	t.row("ek sha256:", hex.EncodeToString(e.GetEkSha256()))
	t.row("source:", strings.ToLower(strings.TrimPrefix(e.GetSource().String(), "ENROLLMENT_SOURCE_")))
	if der := e.GetEkCertificate(); len(der) > 0 {
		if c, err := x509.ParseCertificate(der); err == nil {
			t.row("certificate subject:", c.Subject.String())
			t.row("certificate issuer:", c.Issuer.String())
		} else {
			t.row("certificate:", "present (not parsable: "+err.Error()+")")
		}
	}
	t.row("created:", fmtTime(e.GetCreateTime()))
	return t.flush()
}

func (a *app) enrollmentDelete(args []string) error {
	fs := a.flags("enrollment delete", "enrollment delete NODE --reason TEXT")
	reason := fs.String("reason", "", "why (recorded in the event log); required")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return usagef("enrollment delete: --reason is required: it goes to the event log")
	}
	err = a.inv("delete enrollment of "+pos[0], func(ctx context.Context, c inventoryv1.InventoryServiceClient) error {
		_, err := c.DeleteEnrollment(ctx, &inventoryv1.DeleteEnrollmentRequest{NodeId: pos[0], Reason: *reason})
		return err
	})
	if err != nil {
		return err
	}
	return a.done(map[string]any{"deleted_enrollment": pos[0]}, "deleted the EK enrollment of %s", pos[0])
}

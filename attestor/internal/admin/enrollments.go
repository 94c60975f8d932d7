package admin

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/inventory"
)

func (s *Server) EnrollNode(ctx context.Context, req *inventoryv1.EnrollNodeRequest) (*inventoryv1.EnrollNodeResponse, error) {
	if err := checkName("node_id", req.GetNodeId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ek, err := parseEK(req)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var stored inventory.Enrollment
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		var created bool
		var err error
		stored, created, err = q.Enroll(ctx, inventory.Enrollment{
			NodeID:        req.GetNodeId(),
			EKSHA256:      ek.sha256,
			EKCertificate: ek.certificate,
			EKPublic:      ek.public,
			Source:        inventory.SourceAdmin,
		})
		if err != nil || !created {
			// Enrolling the EK the node already has changes nothing and records nothing.
			return err
		}
		detail := ek.detail
		detail["ek_sha256"] = hexString(ek.sha256)
		detail["method"] = ek.method
		detail["source"] = string(inventory.SourceAdmin)
		return s.record(ctx, q, inventory.Event{NodeID: req.GetNodeId(), Kind: "enrollment.created", Detail: detail})
	})
	if errors.Is(err, inventory.ErrConflict) {
		err = s.explainEnrollConflict(ctx, req.GetNodeId(), ek.sha256, err)
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.EnrollNodeResponse{Enrollment: enrollmentProto(stored)}, nil
}

// explainEnrollConflict says which binding is in the way, and what the admin can do about it.
// It reads after the failed transaction (whose statements were aborted), so what it finds may
// have changed since; then the store's own message is kept.
func (s *Server) explainEnrollConflict(ctx context.Context, nodeID string, ekSHA256 []byte, conflict error) error {
	if cur, err := s.store.GetEnrollment(ctx, nodeID); err == nil && !bytes.Equal(cur.EKSHA256, ekSHA256) {
		return fmt.Errorf("node %q is already enrolled with another EK (sha256 %s, %s enrollment of %s); "+
			"the binding is immutable: call DeleteEnrollment first to replace it: %w",
			nodeID, hexString(cur.EKSHA256), cur.Source, cur.CreatedAt.Format("2006-01-02T15:04:05Z"), inventory.ErrConflict)
	}
	if other, err := s.store.GetEnrollmentByEK(ctx, ekSHA256); err == nil && other.NodeID != nodeID {
		return fmt.Errorf("EK sha256 %s is already enrolled for node %q; an EK belongs to one node: "+
			"call DeleteEnrollment for %q first if the TPM moved: %w",
			hexString(ekSHA256), other.NodeID, other.NodeID, inventory.ErrConflict)
	}
	return conflict
}

func (s *Server) GetEnrollment(ctx context.Context, req *inventoryv1.GetEnrollmentRequest) (*inventoryv1.GetEnrollmentResponse, error) {
	if err := checkName("node_id", req.GetNodeId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	e, err := s.store.GetEnrollment(ctx, req.GetNodeId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.GetEnrollmentResponse{Enrollment: enrollmentProto(e)}, nil
}

func (s *Server) DeleteEnrollment(ctx context.Context, req *inventoryv1.DeleteEnrollmentRequest) (*inventoryv1.DeleteEnrollmentResponse, error) {
	if err := checkName("node_id", req.GetNodeId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := checkText("reason", req.GetReason(), maxReason); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	err := s.store.InTx(ctx, func(q *inventory.Queries) error {
		e, err := q.GetEnrollment(ctx, req.GetNodeId())
		if err != nil {
			return err
		}
		if err := q.DeleteEnrollment(ctx, req.GetNodeId()); err != nil {
			return err
		}
		return s.record(ctx, q, inventory.Event{
			NodeID: req.GetNodeId(),
			Kind:   "enrollment.deleted",
			Reason: req.GetReason(),
			Detail: map[string]any{"ek_sha256": hexString(e.EKSHA256), "source": string(e.Source)},
		})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &inventoryv1.DeleteEnrollmentResponse{}, nil
}

func enrollmentProto(e inventory.Enrollment) *inventoryv1.Enrollment {
	return &inventoryv1.Enrollment{
		NodeId:        e.NodeID,
		EkSha256:      e.EKSHA256,
		EkCertificate: e.EKCertificate,
		Source:        sourceProto(e.Source),
		CreateTime:    timestamppb.New(e.CreatedAt),
	}
}

func sourceProto(s inventory.EnrollmentSource) inventoryv1.EnrollmentSource {
	switch s {
	case inventory.SourceAdmin:
		return inventoryv1.EnrollmentSource_ENROLLMENT_SOURCE_ADMIN
	case inventory.SourceCA:
		return inventoryv1.EnrollmentSource_ENROLLMENT_SOURCE_MANUFACTURER_CA
	case inventory.SourceTOFU:
		return inventoryv1.EnrollmentSource_ENROLLMENT_SOURCE_TRUST_ON_FIRST_USE
	}
	return inventoryv1.EnrollmentSource_ENROLLMENT_SOURCE_UNSPECIFIED
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

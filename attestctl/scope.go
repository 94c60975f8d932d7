package attestctl

import (
	"fmt"
	"strings"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
)

// parseScope reads "defaults", "group:NAME" or "node:ID".
func parseScope(s string) (*metadatav1.Scope, error) {
	kind, name, _ := strings.Cut(s, ":")
	switch {
	case s == "defaults":
		return &metadatav1.Scope{Scope: &metadatav1.Scope_Defaults{Defaults: true}}, nil
	case kind == "group" && name != "":
		return &metadatav1.Scope{Scope: &metadatav1.Scope_Group{Group: name}}, nil
	case kind == "node" && name != "":
		return &metadatav1.Scope{Scope: &metadatav1.Scope_NodeId{NodeId: name}}, nil
	}
	return nil, usagef("scope %q: want defaults, group:NAME or node:ID", s)
}

func scopeString(s *metadatav1.Scope) string {
	switch v := s.GetScope().(type) {
	case *metadatav1.Scope_Defaults:
		return "defaults"
	case *metadatav1.Scope_Group:
		return "group:" + v.Group
	case *metadatav1.Scope_NodeId:
		return "node:" + v.NodeId
	}
	return fmt.Sprint(s)
}

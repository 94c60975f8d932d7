package attestctl

import (
	"context"
	"fmt"
	"strings"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
)

// knownHostsLine formats a reported host key for ~/.ssh/known_hosts: the hostname and the
// node id (when they differ) as the host patterns, then the key type and base64 key, without
// the comment the node put after it.
func knownHostsLine(k *metadatav1.HostKey) (string, bool) {
	fields := strings.Fields(k.GetPublicKey())
	if len(fields) < 2 {
		return "", false
	}
	hosts := []string{}
	if h := k.GetHostname(); h != "" {
		hosts = append(hosts, h)
	}
	if id := k.GetNodeId(); id != "" && id != k.GetHostname() {
		hosts = append(hosts, id)
	}
	if len(hosts) == 0 {
		return "", false
	}
	return strings.Join(hosts, ",") + " " + fields[0] + " " + fields[1], true
}

func runKnownHosts(a *app, args []string) error {
	fs := a.flags("known-hosts", "known-hosts [--node ID]  (append to ~/.ssh/known_hosts)")
	node := fs.String("node", "", "only this node's keys")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var res *metadatav1.ListHostKeysResponse
	err := a.meta("list host keys", func(ctx context.Context, c metadatav1.MetadataServiceClient) (err error) {
		res, err = c.ListHostKeys(ctx, &metadatav1.ListHostKeysRequest{NodeId: *node})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res)
	}
	for _, k := range res.GetHostKeys() {
		if line, ok := knownHostsLine(k); ok {
			if _, err := fmt.Fprintln(a.env.Stdout, line); err != nil {
				return err
			}
		}
	}
	return nil
}

package render_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/metadata/internal/render"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const mungeKey = "MUNGE\x00KEY\nwith: yaml: syntax"

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if os.IsNotExist(err) {
		return ""
	}
	require.NoError(t, err)
	return string(b)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to create it")
	require.Equal(t, string(want), string(got))
}

func input(t *testing.T, secret render.SecretFunc) render.Input {
	var layers []render.Layer
	for _, scope := range []string{"defaults", "group-compute", "group-gpu", "node"} {
		layers = append(layers, render.Layer{
			Scope:         scope,
			UserData:      read(t, scope+".user-data"),
			VendorData:    read(t, scope+".vendor-data"),
			NetworkConfig: read(t, scope+".network-config"),
		})
	}
	layers[0].MetaData = map[string]any{"public-keys": []any{"ssh-ed25519 AAAA admin"}, "site": map[string]any{"name": "a", "rack": 1.0}}
	layers[3].MetaData = map[string]any{"site": map[string]any{"rack": 7.0}, "instance-id": "ignored"}
	return render.Input{
		Layers: layers,
		Facts: render.Facts{
			Node:   render.Node{ID: "x1000c0s0b0n0", Hostname: "nid0001", MAC: "02:00:00:00:00:07", Groups: []string{"compute", "gpu"}},
			Tunnel: render.Tunnel{ID: "6f1c0b1e-0000-4000-8000-000000000001", Address: "100.64.0.2"},
		},
		InstanceID: "6f1c0b1e-0000-4000-8000-000000000001",
		PhoneHome:  render.PhoneHome{URL: "http://100.64.0.1/phone-home", Tries: 3},
		Secret:     secret,
	}
}

func secrets(name string) (string, error) {
	switch name {
	case "munge.key":
		return mungeKey, nil
	case "node.token":
		return "tok: \"en\"", nil
	}
	return "", fmt.Errorf("%q: %w", name, render.ErrSecretUnavailable)
}

// TestGolden renders the four documents of a node in two groups from the testdata scopes and
// compares them with golden files: the merge rule (maps merge, lists append, higher scope wins
// on scalars, null overrides), templates from facts and secrets, the phone_home stanza.
func TestGolden(t *testing.T) {
	t.Parallel()
	for _, k := range render.Kinds {
		doc, used, err := render.Document(k, input(t, secrets))
		require.NoError(t, err, k)
		golden(t, string(k), doc)
		if k == render.UserData {
			require.Equal(t, []string{"munge.key", "node.token"}, used)
		} else {
			require.Empty(t, used)
		}
	}
}

// TestPreviewRedacts renders with placeholders as the admin preview does.
func TestPreviewRedacts(t *testing.T) {
	t.Parallel()
	doc, used, err := render.Document(render.UserData, input(t, func(name string) (string, error) { return render.Redacted(name), nil }))
	require.NoError(t, err)
	require.Equal(t, []string{"munge.key", "node.token"}, used)
	require.Contains(t, string(doc), "[REDACTED:munge.key]")
	require.Contains(t, string(doc), "[REDACTED:node.token]")
	require.NotContains(t, string(doc), "MUNGE")
}

func TestMissingSecretFails(t *testing.T) {
	t.Parallel()
	_, _, err := render.Document(render.UserData, input(t, func(name string) (string, error) {
		return "", fmt.Errorf("%q: %w", name, render.ErrSecretUnavailable)
	}))
	require.ErrorIs(t, err, render.ErrSecretUnavailable)
}

func TestSecretBreakingYAMLIsNotQuoted(t *testing.T) {
	t.Parallel()
	in := render.Input{Layers: []render.Layer{{Scope: "node", UserData: "#cloud-config\nkey: {{ secret \"s\" }}\n"}},
		Secret: func(string) (string, error) { return "x: [unclosed-secret-value", nil }}
	_, _, err := render.Document(render.UserData, in)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "unclosed-secret-value")
}

func TestNonCloudConfigUserData(t *testing.T) {
	t.Parallel()
	in := render.Input{Layers: []render.Layer{
		{Scope: "defaults", UserData: "#cloud-config\nruncmd: [a]\n"},
		{Scope: "node", UserData: "#!/bin/sh\necho {{ .Node.ID }}\n"},
	}, Facts: render.Facts{Node: render.Node{ID: "n1"}}}
	doc, _, err := render.Document(render.UserData, in)
	require.NoError(t, err)
	require.Equal(t, "#!/bin/sh\necho n1\n", string(doc), "the highest scope's script is served alone")

	in.Layers[1].UserData = "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n"
	doc, _, err = render.Document(render.UserData, in)
	require.NoError(t, err)
	require.Equal(t, in.Layers[1].UserData, string(doc), "cloud-init's jinja templates pass through")

	empty, _, err := render.Document(render.UserData, render.Input{})
	require.NoError(t, err)
	require.Empty(t, empty)
	nc, _, err := render.Document(render.NetworkConfig, render.Input{})
	require.NoError(t, err)
	require.Empty(t, nc)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind    render.Kind
		src     string
		secrets []string
		err     string
	}{
		{render.UserData, read(t, "defaults.user-data"), []string{"munge.key"}, ""},
		{render.UserData, "#cloud-config\na: {{ secret \"b\" }}\nc: {{ if true }}{{ secret \"a\" | quote }}{{ end }}\n", []string{"a", "b"}, ""},
		{render.UserData, "#!/bin/sh\necho hi\n", nil, ""},
		{render.UserData, "hostname: x\n", nil, "must start with"},
		{render.UserData, "#cloud-config\na: [\n", nil, "not valid YAML"},
		{render.UserData, "#cloud-config\na: {{ .Node.Nope }}\n", nil, "Nope"},
		{render.UserData, "#cloud-config\na: {{ secret .Node.ID }}\n", nil, "string literals"},
		{render.UserData, "#cloud-config\na: {{ if }}\n", nil, "missing value for if"},
		{render.VendorData, "#!/bin/sh\n", nil, "must start with"},
		{render.NetworkConfig, "version: 2\nx: {{ secret \"a\" }}\n", nil, "may not use secrets"},
		{render.NetworkConfig, "- a\n", nil, "mapping"},
	} {
		names, err := render.Check(tc.kind, tc.src)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.src)
			continue
		}
		require.NoError(t, err, tc.src)
		require.Equal(t, tc.secrets, names)
	}
}

// FuzzCheck feeds operator documents to validation and rendering: neither may panic, and a
// document that passes Check renders with placeholder secrets.
func FuzzCheck(f *testing.F) {
	for _, n := range []string{"defaults.user-data", "group-compute.user-data", "node.user-data", "defaults.vendor-data", "defaults.network-config"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		require.NoError(f, err)
		f.Add(string(b))
	}
	f.Add("#cloud-config\n{{ range .Node.Groups }}{{ secret . }}{{ end }}")
	f.Fuzz(func(t *testing.T, src string) {
		for _, k := range []render.Kind{render.UserData, render.VendorData, render.NetworkConfig} {
			if _, err := render.Check(k, src); err != nil {
				continue
			}
			in := render.Input{Layers: []render.Layer{{Scope: "x", UserData: src, VendorData: src, NetworkConfig: src}},
				Facts:  render.Facts{Node: render.Node{ID: "n", Hostname: "n", Groups: []string{"g"}}},
				Secret: func(name string) (string, error) { return render.Redacted(name), nil }}
			if _, _, err := render.Document(k, in); err != nil && !strings.Contains(err.Error(), "YAML") {
				t.Fatalf("%s passed Check but failed to render: %v", k, err)
			}
		}
	})
}

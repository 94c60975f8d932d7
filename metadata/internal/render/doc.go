// Package render turns the cloud-init data of a node's scopes into the four NoCloud documents
// the node receives: templates filled from node facts and secrets, then the scopes merged.
//
// # Templates
//
// user-data, vendor-data and network-config are Go text/template documents executed once per
// scope before merging, with the facts as dot: {{ .Node.ID }}, {{ .Node.Hostname }},
// {{ .Node.MAC }}, {{ .Node.Groups }} (names, ascending priority), {{ .Tunnel.ID }} and
// {{ .Tunnel.Address }}. {{ secret "name" }} inserts a secret's value (user-data and
// vendor-data only). Since values may hold newlines or YAML syntax, pipe them through a
// filter that keeps the YAML valid: {{ secret "munge.key" | base64 }} (with write_files
// "encoding: b64"), {{ secret "x" | quote }} (a double-quoted scalar) or
// {{ secret "x" | indent 6 }} (under a "|" block). {{ join .Node.Groups "," }} joins a list. Secret names must be string literals, so
// validation knows every secret a document uses. A document starting with
// "## template: jinja" is cloud-init's own template and passes through untouched.
//
// # Merge rule
//
// Scopes apply in the order cluster defaults < groups by ascending priority < node, each
// merged into the result of the ones before:
//
//   - two mappings merge key by key, recursively;
//   - two lists append (the lower scope's items first);
//   - anything else (scalars, or values of different kinds): the higher scope's value wins.
//
// This holds for "#cloud-config" user-data and vendor-data, network-config (version 2 YAML) and
// meta-data. A user-data document in another cloud-init format (a script, "#include",
// MIME multi-part, a jinja template) cannot be merged: when the highest scope that has
// user-data has such a document it is served alone; otherwise cloud-config scopes are merged
// and lower scopes in other formats are left out. vendor-data must be "#cloud-config": the
// service adds its phone_home stanza to it, replacing any phone_home an operator wrote.
// meta-data always gets instance-id, local-hostname and hostname from the service, and is never
// templated: cloud-init copies it to a world-readable file.
package render

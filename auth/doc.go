// Package auth decides who may do what in a cluster: the bearer tokens of
// bidders and admins (signed with auth.secret, checked by the gateways and
// the nodes), and Guard, the checks every gRPC server of the cluster makes
// of its callers — the role and id their certificates name (package pki)
// and the tokens they carry — with a logged reason for every refusal.
// docs/security.md says what each role may do.
package auth

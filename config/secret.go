package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// redacted is what every printing path shows instead of a secret.
const redacted = "[redacted]"

// Secret holds a password or token loaded from a file or an environment
// variable. It exists so that a secret can travel inside Config (which is
// logged, printed by check-config and dumped in tests) without ever being
// shown: every way Go prints or encodes a value gives "[redacted]". Only
// Reveal returns the value, so the few places that need it are easy to find.
type Secret string

// Reveal returns the secret itself. Call it only where the value is handed
// to the peer that needs it (a BMC session, a webhook signature).
func (s Secret) Reveal() string { return string(s) }

// String keeps %s, %v and Println from printing the value.
func (s Secret) String() string { return redacted }

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return redacted }

// Format covers every fmt verb (%q, %x, %d...), which String alone does not.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue keeps slog from printing the value, whatever the handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON keeps API answers and JSON logs from carrying the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText covers encoders that use encoding.TextMarshaler (XML, map keys).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalYAML keeps a YAML dump of the config from carrying the value.
func (s Secret) MarshalYAML() (any, error) { return redacted, nil }

// The types below hold secrets and get Format methods because fmt has one
// path that bypasses Secret.Format: a pointer to a struct printed with a
// verb other than %v (say %s of a Host, whose BMC is a *BMC) is shown
// through fmt's "bad verb" fallback, which ignores Formatter and String
// methods and would print the raw password. Each method prints the same
// struct through a method-less copy of its type, so fields still go
// through Secret.Format.

// Format prints the BMC with its password redacted, for every verb.
func (b BMC) Format(f fmt.State, verb rune) {
	type plain BMC
	formatAs(f, verb, plain(b), "BMC")
}

// Format prints the webhook with its secret redacted, for every verb.
func (w Webhook) Format(f fmt.State, verb rune) {
	type plain Webhook
	formatAs(f, verb, plain(w), "Webhook")
}

// Format prints the notify section with secrets redacted, for every verb.
func (n Notify) Format(f fmt.State, verb rune) {
	type plain Notify
	formatAs(f, verb, plain(n), "Notify")
}

// Format prints the whole config with secrets redacted, for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config
	formatAs(f, verb, plain(c), "Config")
}

// formatAs prints v with the caller's verb and flags; for %#v it puts the
// real type name back in place of the method-less copy's.
func formatAs(f fmt.State, verb rune, v any, name string) {
	s := fmt.Sprintf(fmt.FormatString(f, verb), v)
	if verb == 'v' && f.Flag('#') {
		s = strings.Replace(s, "config.plain", "config."+name, 1)
	}
	_, _ = io.WriteString(f, s)
}

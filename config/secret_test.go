package config

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func assertNoSecret(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range []string{testPassword, testEnvPass, testHookSecret} {
		if strings.Contains(out, s) {
			t.Errorf("%s leaks a secret: %s", what, out)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	c, _ := loadFull(t)
	s := c.Hosts[0].BMC.Password
	if s.Reveal() != testPassword {
		t.Fatalf("test setup: secret not loaded")
	}
	values := map[string]any{
		"secret": s, "*secret": &s, "bmc": *c.Hosts[0].BMC, "*bmc": c.Hosts[0].BMC,
		"host": c.Hosts[2], "config": *c, "*config": c, "webhook": c.Notify.Webhooks[0],
		"*webhook": &c.Notify.Webhooks[0], "*notify": &c.Notify, "*host": &c.Hosts[2],
		"nested": struct {
			C *Config
			B []*BMC
		}{c, []*BMC{c.Hosts[0].BMC, nil}},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10.3s"} {
			out := fmt.Sprintf(verb, v)
			assertNoSecret(t, name+" "+verb, out)
		}
		assertNoSecret(t, name+" Sprint", fmt.Sprint(v))
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json %s: %v", name, err)
		}
		assertNoSecret(t, name+" json", string(j))
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatalf("yaml %s: %v", name, err)
		}
		assertNoSecret(t, name+" yaml", string(y))
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "v", v, slog.Any("s", s))
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "v", v, slog.Any("s", s))
		assertNoSecret(t, name+" slog", buf.String())
	}
	if got := fmt.Sprintf("%v|%s|%#v|%q", s, s, s, s); got != "[redacted]|[redacted]|[redacted]|[redacted]" {
		t.Errorf("formatted secret = %q", got)
	}
	if got := fmt.Sprintf("%#v", *c.Hosts[0].BMC); !strings.HasPrefix(got, "config.BMC{Address:\"10.0.1.5\"") {
		t.Errorf("%%#v of BMC = %s", got)
	}
	if got := fmt.Sprintf("%+v", c.Hosts[0].BMC); !strings.Contains(got, "Password:[redacted]") || !strings.Contains(got, "User:admin") {
		t.Errorf("%%+v of *BMC = %s", got)
	}
	j, _ := json.Marshal(map[string]Secret{"p": s})
	if string(j) != `{"p":"[redacted]"}` {
		t.Errorf("json = %s", j)
	}
	type doc struct{ P Secret }
	x, err := xml.Marshal(doc{s})
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "xml", string(x))
	if !strings.Contains(string(x), "[redacted]") {
		t.Errorf("xml = %s", x)
	}
}

package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem in the config file, located by line and field
// path, so an operator can go straight to it.
type FieldError struct {
	File   string
	Line   int
	Path   string // e.g. hosts[2].role; empty for whole-file problems
	Reason string
}

// Error formats as "FILE:LINE: path: reason".
func (e *FieldError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, e.Reason)
}

// decoder walks the node tree and collects every problem instead of
// stopping at the first.
type decoder struct {
	file string
	dir  string
	opts Options
	errs []*FieldError
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	line := 1
	if n != nil && n.Line > 0 {
		line = n.Line
	}
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Path: path, Reason: fmt.Sprintf(format, args...)})
}

// err returns every problem, sorted by line, as one error.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(d.errs, func(a, b *FieldError) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// entry is one key: value pair of a mapping.
type entry struct{ key, val *yaml.Node }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// mapping returns the entries of a mapping node by key, rejecting unknown
// and duplicate keys. A null node is an empty mapping. It returns nil when n
// is not a mapping (the problem is recorded).
func (d *decoder) mapping(n *yaml.Node, path string, allowed ...string) map[string]entry {
	n = deref(n)
	if isNull(n) {
		return map[string]entry{}
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping (key: value)")
		return nil
	}
	out := make(map[string]entry, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if !slices.Contains(allowed, k.Value) {
			d.fail(k, join(path, k.Value), "unknown key (known keys: %s)", strings.Join(allowed, ", "))
			continue
		}
		if prev, dup := out[k.Value]; dup {
			d.fail(k, join(path, k.Value), "duplicate key (first set at line %d)", prev.key.Line)
			continue
		}
		out[k.Value] = entry{k, v}
	}
	return out
}

// sequence returns the items of a sequence node; null is empty.
func (d *decoder) sequence(n *yaml.Node, path string) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list")
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = deref(c)
	}
	return out
}

// str reads a scalar as a string; null reads as "".
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if isNull(n) {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be a single value, not a list or mapping")
		return "", false
	}
	return n.Value, true
}

// nonEmpty reads a string that, when present, must not be empty.
func (d *decoder) nonEmpty(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if ok && strings.TrimSpace(s) == "" {
		d.fail(n, path, "must not be empty (leave the key out to use the default)")
		return "", false
	}
	return s, ok
}

// oneOf reads a string that must be one of choices.
func (d *decoder) oneOf(n *yaml.Node, path string, choices ...string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !slices.Contains(choices, s) {
		d.fail(n, path, "%q is not one of %s", s, strings.Join(choices, ", "))
		return "", false
	}
	return s, true
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		d.fail(n, path, "must be true or false")
		return false, false
	}
	return b, true
}

func (d *decoder) integer(n *yaml.Node, path string) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		d.fail(n, path, "must be an integer")
		return 0, false
	}
	i, err := strconv.Atoi(n.Value)
	if err != nil {
		var i64 int64
		if n.Decode(&i64) != nil {
			d.fail(n, path, "must be an integer")
			return 0, false
		}
		i = int(i64)
	}
	return i, true
}

// duration reads a positive Go duration string: every duration in the file
// is a timeout or an interval, where zero or negative makes no sense.
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.fail(n, path, "must be a duration like \"30s\" or \"5m\"")
		return 0, false
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.fail(n, path, "%q is not a duration (use a unit, like \"30s\" or \"5m\")", n.Value)
		return 0, false
	}
	if v <= 0 {
		d.fail(n, path, "must be positive, got %s", n.Value)
		return 0, false
	}
	return v, true
}

// strings reads a list of non-empty strings.
func (d *decoder) strList(n *yaml.Node, path string) []string {
	var out []string
	for i, item := range d.sequence(n, path) {
		p := fmt.Sprintf("%s[%d]", path, i)
		if s, ok := d.nonEmpty(item, p); ok {
			out = append(out, s)
		}
	}
	return out
}

// resolve makes a path relative to the config file's directory, so a
// config can ship next to its key and password files.
func (d *decoder) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(d.dir, p)
}

// osReason is the part of a file error worth showing: the path is already
// in the message.
func osReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// readable checks that p is a regular file this process can read.
func (d *decoder) readable(n *yaml.Node, path, p string) (fs.FileInfo, bool) {
	f, err := os.Open(p)
	if err != nil {
		d.fail(n, path, "cannot read %s: %s", p, osReason(err))
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		d.fail(n, path, "cannot read %s: %s", p, osReason(err))
		return nil, false
	}
	if !fi.Mode().IsRegular() {
		d.fail(n, path, "%s is not a regular file", p)
		return nil, false
	}
	return fi, true
}

// private checks that a secret file is readable by us and not by every
// user on the machine.
func (d *decoder) private(n *yaml.Node, path, p string) bool {
	fi, ok := d.readable(n, path, p)
	if !ok {
		return false
	}
	if fi.Mode().Perm()&0o004 != 0 {
		d.fail(n, path, "%s is readable by every user (mode %04o); it holds a secret: chmod o-rwx it", p, fi.Mode().Perm())
		return false
	}
	return true
}

// path reads a file path field, resolves it, and checks it is readable
// (and private when secret is true). An empty value is returned as is.
func (d *decoder) path(n *yaml.Node, path string, secret bool) string {
	s, ok := d.str(n, path)
	if !ok || s == "" {
		return ""
	}
	p := d.resolve(s)
	if secret {
		d.private(n, path, p)
	} else {
		d.readable(n, path, p)
	}
	return p
}

// secretFile reads a password file: private, non-empty, trailing newline
// removed (editors add one). Errors never contain the content.
func (d *decoder) secretFile(n *yaml.Node, path string) Secret {
	s, ok := d.nonEmpty(n, path)
	if !ok {
		return ""
	}
	p := d.resolve(s)
	if !d.private(n, path, p) {
		return ""
	}
	data, err := os.ReadFile(p)
	if err != nil {
		d.fail(n, path, "cannot read %s: %s", p, osReason(err))
		return ""
	}
	v := strings.TrimRight(string(data), "\r\n")
	if v == "" {
		d.fail(n, path, "%s is empty", p)
		return ""
	}
	return Secret(v)
}

// secretEnv reads a secret from an environment variable that must be set
// and non-empty.
func (d *decoder) secretEnv(n *yaml.Node, path string) Secret {
	name, ok := d.nonEmpty(n, path)
	if !ok {
		return ""
	}
	v := os.Getenv(name)
	if v == "" {
		d.fail(n, path, "environment variable %s is not set or empty", name)
		return ""
	}
	return Secret(v)
}

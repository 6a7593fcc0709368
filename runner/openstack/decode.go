package openstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A Nova server page is about 1.5 KB of JSON per server, of which we read
// five strings. encoding/json reads the whole body twice (validation, then
// decoding, skipping what a struct does not name by scanning it again): at
// 1,000 servers a page that was tens of milliseconds of CPU, and a shutdown
// reads two pages every poll interval on a control host running on battery,
// beside the os-stops it is sending. decodePage reads the page in one pass:
// it validates the whole body as JSON (same grammar and nesting limit as
// encoding/json) and copies out only the five strings per server, with
// encoding/json itself decoding the rare string with escapes or invalid
// UTF-8, so every value comes out as encoding/json would give it.

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// page is a decoded server page.
type page struct {
	servers []wireServer
	present bool // the body has a "servers" list
	badItem int  // index+1 of the first entry that is not an object
	links   []byte
}

// wireServer is one server as far as we read it. A field that is absent or
// not a string (null for an idle task_state, or something odd) is "".
type wireServer struct {
	ID, Name, Status, TenantID, TaskState string
}

type scan struct {
	b     []byte
	i     int
	depth int
}

var errEnd = errors.New("unexpected end of JSON input")

func (s *scan) fail(what string) error {
	if s.i >= len(s.b) {
		return errEnd
	}
	return fmt.Errorf("%s at offset %d", what, s.i)
}

func (s *scan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// decodePage decodes a server page body.
func decodePage(b []byte) (page, error) {
	var p page
	s := &scan{b: b}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		if err := s.value(); err != nil {
			return p, fmt.Errorf("decode server page: %w", err)
		}
		return p, errors.New("decode server page: body is not an object")
	}
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "servers":
			p.servers, p.present, p.badItem = p.servers[:0], false, 0
			s.ws()
			if s.i < len(b) && b[s.i] == '[' {
				p.present = true
				return s.array(func(n int) error {
					if s.i < len(b) && b[s.i] == '{' {
						var w wireServer
						err := s.object(func(key []byte) error { return s.serverField(&w, key) })
						p.servers = append(p.servers, w)
						return err
					}
					if p.badItem == 0 {
						p.badItem = n + 1
					}
					return s.value()
				})
			}
			return s.value()
		case "servers_links":
			s.ws()
			start := s.i
			err := s.value()
			p.links = b[start:s.i]
			return err
		}
		return s.value()
	})
	if err == nil {
		s.ws()
		if s.i < len(b) {
			err = s.fail("invalid character after top-level value")
		}
	}
	if err != nil {
		return page{}, fmt.Errorf("decode server page: %w", err)
	}
	return p, nil
}

// serverField reads one member of a server object into w.
func (s *scan) serverField(w *wireServer, key []byte) error {
	var dst *string
	switch string(key) {
	case "id":
		dst = &w.ID
	case "name":
		dst = &w.Name
	case "status":
		dst = &w.Status
	case "tenant_id":
		dst = &w.TenantID
	case "OS-EXT-STS:task_state":
		dst = &w.TaskState
	default:
		return s.value()
	}
	s.ws()
	*dst = ""
	if s.i < len(s.b) && s.b[s.i] == '"' {
		v, err := s.str()
		*dst = v
		return err
	}
	return s.value()
}

// object reads an object at s.i, calling member with each key (decoded, only
// valid during the call) and s.i at the member's value (before optional
// white space), which member must read.
func (s *scan) object(member func(key []byte) error) error {
	if s.depth++; s.depth > maxDepth {
		return errors.New("exceeded max depth")
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.fail("invalid character looking for beginning of object key string")
		}
		start := s.i
		key, escaped, err := s.rawStr()
		if err != nil {
			return err
		}
		if escaped || !utf8.Valid(key) {
			var k string
			if err := json.Unmarshal(s.b[start:s.i], &k); err != nil {
				return err
			}
			key = []byte(k)
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("invalid character after object key")
		}
		s.i++
		if err := member(key); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errEnd
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.ws()
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("invalid character after object key:value pair")
		}
	}
}

// array reads an array at s.i, calling elem with each index and s.i at the
// element, which elem must read.
func (s *scan) array(elem func(n int) error) error {
	if s.depth++; s.depth > maxDepth {
		return errors.New("exceeded max depth")
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return nil
	}
	for n := 0; ; n++ {
		if err := elem(n); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errEnd
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.ws()
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("invalid character after array element")
		}
	}
}

// value reads (validates and skips) any JSON value at s.i, after optional
// white space.
func (s *scan) value() error {
	s.ws()
	if s.i >= len(s.b) {
		return errEnd
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(func([]byte) error { return s.value() })
	case c == '[':
		return s.array(func(int) error { return s.value() })
	case c == '"':
		_, _, err := s.rawStr()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return s.fail("invalid character looking for beginning of value")
}

func (s *scan) literal(lit string) error {
	for k := 0; k < len(lit); k++ {
		if s.i >= len(s.b) {
			return errEnd
		}
		if s.b[s.i] != lit[k] {
			return s.fail("invalid character in literal " + lit)
		}
		s.i++
	}
	return nil
}

func (s *scan) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scan) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i >= len(s.b):
		return errEnd
	case s.b[s.i] == '0':
		s.i++
	case s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return s.fail("invalid character in numeric literal")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return s.fail("invalid character after decimal point in numeric literal")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return s.fail("invalid character in exponent of numeric literal")
		}
	}
	return nil
}

// rawStr reads a string at s.i (a '"'), validating its escapes, and
// returns the bytes between the quotes and whether it has any escape.
func (s *scan) rawStr() (raw []byte, escaped bool, err error) {
	s.i++
	start := s.i
	for s.i < len(s.b) {
		// Most bytes are plain: skip them in a tight loop.
		for s.i < len(s.b) && !strSpecial[s.b[s.i]] {
			s.i++
		}
		if s.i >= len(s.b) {
			break
		}
		switch c := s.b[s.i]; {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			s.i++
			if s.i >= len(s.b) {
				return nil, false, errEnd
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for k := 0; k < 4; k++ {
					if s.i >= len(s.b) {
						return nil, false, errEnd
					}
					if !isHex(s.b[s.i]) {
						return nil, false, s.fail("invalid character in \\u hexadecimal character escape")
					}
					s.i++
				}
			default:
				return nil, false, s.fail("invalid character in string escape code")
			}
		case c < 0x20:
			return nil, false, s.fail("invalid character in string literal")
		default:
			s.i++
		}
	}
	return nil, false, errEnd
}

// str reads a string at s.i and returns its value as encoding/json would.
func (s *scan) str() (string, error) {
	start := s.i
	raw, escaped, err := s.rawStr()
	if err != nil {
		return "", err
	}
	if !escaped && utf8.Valid(raw) {
		return string(raw), nil
	}
	var v string
	if err := json.Unmarshal(s.b[start:s.i], &v); err != nil {
		return "", err
	}
	return v, nil
}

// strSpecial marks the bytes that end a plain run inside a string.
var strSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

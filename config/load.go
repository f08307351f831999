package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// envPrefix starts the environment variables that override scalar keys:
// GAVEL_CHAIN_TICK overrides chain.tick, GAVEL_LOG_LEVEL log.level.
const envPrefix = "GAVEL"

// Load reads the YAML file at path, fills in the default of every scalar key
// the file leaves out, applies GAVEL_* environment overrides to scalar keys,
// decodes and validates the result. Nodes come only from the file. Every
// problem is an *Error naming path and key (several are joined); a missing
// file satisfies errors.Is(err, fs.ErrNotExist).
func Load(path string) (*Config, error) {
	if path == "" {
		return nil, &Error{Msg: "no config file given"}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return nil, &Error{File: path, Msg: "cannot read config file: " + msg, err: err}
	}
	raw, err := parseYAML(data)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error(), err: ErrSyntax}
	}

	p := &problems{file: path}
	checkKeys(p, "", raw, reflect.TypeFor[Config]())

	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	// Defaults make every scalar key known to viper, which is what lets
	// AutomaticEnv override keys that the file leaves out.
	setDefaults(v, "", reflect.ValueOf(Default()).Elem())
	if err := v.MergeConfigMap(raw); err != nil {
		return nil, &Error{File: path, Msg: err.Error(), err: err}
	}

	c := &Config{File: path}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{DecodeHook: decodeHook, Result: c})
	if err != nil {
		return nil, err // only for a bad Result, which c is not
	}
	if err := dec.Decode(v.AllSettings()); err != nil {
		decodeProblems(p, err)
	}
	if len(p.errs) == 0 {
		c.validate(p)
	}
	for _, e := range p.errs {
		if name := envName(e.Key); e.Key != "" && os.Getenv(name) != "" {
			e.Msg += " (from $" + name + ")"
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// envName returns the environment variable that overrides key.
func envName(key string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// parseYAML decodes a single YAML document whose top level is a mapping.
// Its errors carry yaml's line numbers.
func parseYAML(data []byte) (map[string]any, error) {
	var doc, extra any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	if err == nil && dec.Decode(&extra) != io.EOF {
		err = errors.New("more than one YAML document (---); gavel reads only one")
	}
	if err != nil && err != io.EOF {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
		return nil, fmt.Errorf("%v: %s", ErrSyntax, strings.ReplaceAll(msg, "\n  ", "; "))
	}
	if doc == nil {
		return map[string]any{}, nil
	}
	m, ok := asMap(doc)
	if !ok {
		return nil, fmt.Errorf("%v: the top level must be a mapping of keys, got %s", ErrSyntax, describe(doc))
	}
	return m, nil
}

// asMap returns v as a map with string keys if it is a YAML mapping.
func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[fmt.Sprint(k)] = x
		}
		return out, true
	}
	return nil, false
}

// field is a struct field that is a config key.
type field struct {
	key   string
	index int
	typ   reflect.Type
}

// fields lists the config keys of struct type t, from mapstructure tags.
func fields(t reflect.Type) []field {
	var fs []field
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ",")
		if tag != "" && tag != "-" {
			fs = append(fs, field{tag, i, t.Field(i).Type})
		}
	}
	return fs
}

// checkKeys reports every key of raw, the YAML found at path, that type t
// has no field for. Type mismatches are left to the decoder.
//
// A key that older versions read is named in removedKeys with the reason.
func checkKeys(p *problems, path string, raw any, t reflect.Type) {
	switch t.Kind() {
	case reflect.Struct:
		m, ok := asMap(raw)
		if !ok {
			return
		}
		fs := fields(t)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			i := slices.IndexFunc(fs, func(f field) bool { return strings.EqualFold(f.key, k) })
			if i < 0 {
				if why, ok := removedKeys[join(path, k)]; ok {
					p.add(join(path, k), ErrUnknownKey, "no longer read: %s", why)
					continue
				}
				known := make([]string, len(fs))
				for j, f := range fs {
					known[j] = f.key
				}
				p.add("", ErrUnknownKey, "unknown key %q (known here: %s)", join(path, k), strings.Join(known, ", "))
				continue
			}
			checkKeys(p, join(path, k), m[k], fs[i].typ)
		}
	case reflect.Slice:
		l, _ := raw.([]any)
		for i, x := range l {
			checkKeys(p, fmt.Sprintf("%s[%d]", path, i), x, t.Elem())
		}
	case reflect.Map:
		m, _ := asMap(raw)
		for k, x := range m {
			checkKeys(p, join(path, k), x, t.Elem())
		}
	}
}

// join appends key to the key path prefix.
func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// setDefaults registers the scalar values of struct val as viper defaults
// under prefix. Lists and maps have no defaults: they come from the file;
// a list of strings is registered as "" so that the environment can
// override it with a comma-separated value.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	for _, f := range fields(val.Type()) {
		key := join(prefix, f.key)
		switch fv := val.Field(f.index); fv.Kind() {
		case reflect.Struct:
			setDefaults(v, key, fv)
		case reflect.Slice:
			if fv.Type() == stringsType {
				v.SetDefault(key, strings.Join(fv.Interface().([]string), ","))
			}
		case reflect.Map:
		default:
			v.SetDefault(key, fv.Interface())
		}
	}
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	stringsType  = reflect.TypeFor[[]string]()
)

// decodeHook converts YAML values and environment strings to field types,
// with messages that say what was expected. It replaces mapstructure's weak
// typing, which would read "tick: 10" as ten nanoseconds. A section with a
// field of another kind (float, say) adds its case here, so that the
// environment's strings convert. A list of strings may also be written as
// one comma-separated string; an empty list decodes as nil.
func decodeHook(_, to reflect.Type, data any) (any, error) {
	switch {
	case to == stringsType:
		var items []string
		switch d := data.(type) {
		case []string:
			items = d
		case string:
			items = strings.Split(d, ",")
		case []any:
			for _, x := range d {
				switch x.(type) {
				case map[string]any, map[any]any, []any, nil:
					return nil, fmt.Errorf("expected a list of strings, got %s in it", describe(x))
				}
				items = append(items, fmt.Sprint(x))
			}
		default:
			return nil, fmt.Errorf("expected a list of strings or a comma-separated string, got %s", describe(data))
		}
		var out []string
		for _, s := range items {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	case to == durationType:
		switch d := data.(type) {
		case time.Duration:
			return d, nil
		case string:
			v, err := time.ParseDuration(strings.TrimSpace(d))
			if err != nil {
				return nil, fmt.Errorf("invalid duration %q (want e.g. \"10ms\" or \"1.5s\")", d)
			}
			return v, nil
		case int, int64, uint64, float64:
			return nil, fmt.Errorf("invalid duration %v: give a unit, e.g. \"%vms\"", d, d)
		}
		return nil, fmt.Errorf("expected a duration such as \"10ms\", got %s", describe(data))
	case to.Kind() == reflect.Int:
		switch n := data.(type) {
		case int, int64:
			return n, nil
		case uint64:
			if n <= math.MaxInt64 {
				return int64(n), nil
			}
		case float64:
			if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
				return int64(n), nil
			}
		case string:
			if v, err := strconv.Atoi(strings.TrimSpace(n)); err == nil {
				return v, nil
			}
			return nil, fmt.Errorf("invalid integer %q", n)
		}
		return nil, fmt.Errorf("expected an integer, got %s", describe(data))
	case to.Kind() == reflect.Bool:
		switch b := data.(type) {
		case bool:
			return b, nil
		case string:
			if v, err := strconv.ParseBool(strings.TrimSpace(b)); err == nil {
				return v, nil
			}
			return nil, fmt.Errorf("invalid boolean %q (want true or false)", b)
		}
		return nil, fmt.Errorf("expected true or false, got %s", describe(data))
	case to.Kind() == reflect.String:
		switch data.(type) {
		case string:
		case map[string]any, map[any]any, []any:
			return nil, fmt.Errorf("expected a string, got %s", describe(data))
		default:
			return fmt.Sprint(data), nil
		}
	case to.Kind() == reflect.Struct:
		if _, ok := asMap(data); !ok {
			return nil, fmt.Errorf("expected a mapping of keys, got %s", describe(data))
		}
	case to.Kind() == reflect.Slice:
		if _, ok := data.([]any); !ok {
			return nil, fmt.Errorf("expected a list, got %s", describe(data))
		}
	}
	return data, nil
}

// describe names a YAML value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}

// decodeProblems records each field error inside a mapstructure error under
// its key path (mapstructure names fields by tag: "nodes[1].addr").
func decodeProblems(p *problems, err error) {
	var nested *mapstructure.DecodeError
	switch e := err.(type) {
	case *mapstructure.DecodeError:
		if errors.As(e.Unwrap(), &nested) {
			decodeProblems(p, e.Unwrap())
		} else {
			p.add(e.Name(), e.Unwrap(), "%v", e.Unwrap())
		}
	case interface{ Unwrap() []error }:
		for _, e := range e.Unwrap() {
			decodeProblems(p, e)
		}
	case interface{ Unwrap() error }:
		decodeProblems(p, e.Unwrap())
	default:
		p.add("", err, "%v", err)
	}
}

// removedKeys are keys older versions read, with what replaced them.
var removedKeys = map[string]string{
	"chain.dedup_window": "the parameters that decide duplicates are part of the replicated auction state " +
		"(client sessions, 256 request ids per bidder); delete the line",
}

// helm-render renders a Helm chart the way `helm template` does, for tests on machines where helm cannot be
// installed: Go's text/template with sprig's functions (the engine Helm uses), Helm's own functions
// (include, tpl, required, toYaml, fromYaml, toJson, lookup answering nothing, as in `helm template`), the
// chart's values.yaml deep-merged with the given values, and .Release, .Chart and .Capabilities. It prints
// the rendered manifests as "# Source:" separated YAML documents, as helm does, and with -values-out the
// merged values as JSON, for the caller to check against values.schema.json.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build, on Debian's golang packages, which put sprig v3
// at its GOPATH import path github.com/Masterminds/sprig. values.schema.json is not applied here: the
// tests check the merged values (-values-out) with ajv, as helm checks them with its JSON schema library.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v3"
)

func main() {
	chartDir := flag.String("chart", "", "chart directory")
	valuesFile := flag.String("values", "", "a JSON or YAML file of values over values.yaml")
	valuesOut := flag.String("values-out", "", "write the merged values here as JSON")
	release := flag.String("name", "ferry", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	flag.Parse()
	if err := run(*chartDir, *valuesFile, *valuesOut, *release, *namespace); err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
}

func readYaml(file string) (map[string]interface{}, error) {
	out := map[string]interface{}{}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return normalize(out).(map[string]interface{}), nil
}

// normalize turns yaml.v3's map[string]interface{} trees into plain JSON-like values.
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, x := range t {
			t[k] = normalize(x)
		}
		return t
	case []interface{}:
		for i, x := range t {
			t[i] = normalize(x)
		}
		return t
	default:
		return v
	}
}

// merge lays over onto base as Helm coalesces values: maps merge key by key, anything else replaces, and a
// null removes the key.
func merge(base, over map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		bm, bok := out[k].(map[string]interface{})
		om, ook := v.(map[string]interface{})
		if bok && ook {
			out[k] = merge(bm, om)
		} else {
			out[k] = v
		}
	}
	return out
}

func toYaml(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func run(chartDir, valuesFile, valuesOut, release, namespace string) error {
	chart, err := readYaml(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYaml(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	if valuesFile != "" {
		over, err := readYaml(valuesFile)
		if err != nil {
			return err
		}
		values = merge(values, over)
	}
	if valuesOut != "" {
		raw, _ := json.Marshal(values)
		if err := os.WriteFile(valuesOut, raw, 0o644); err != nil {
			return err
		}
	}

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYaml
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		out := map[string]interface{}{}
		_ = yaml.Unmarshal([]byte(s), &out)
		return out
	}
	funcs["toJson"] = func(v interface{}) string {
		raw, _ := json.Marshal(v)
		return string(raw)
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["lookup"] = func(...interface{}) map[string]interface{} { return map[string]interface{}{} }
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	root.Funcs(funcs).Option("missingkey=zero")

	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	var rendered []string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		name := filepath.Join("templates", filepath.Base(f))
		if _, err := root.New(name).Parse(string(raw)); err != nil {
			return err
		}
		if !strings.HasPrefix(filepath.Base(f), "_") {
			rendered = append(rendered, name)
		}
	}

	data := map[string]interface{}{
		"Values": values,
		"Chart": map[string]interface{}{
			"Name":       chart["name"],
			"Version":    chart["version"],
			"AppVersion": chart["appVersion"],
		},
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v1.30.0", "Major": "1", "Minor": "30"},
		},
	}
	var out strings.Builder
	for _, name := range rendered {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return err
		}
		text := strings.TrimSpace(buf.String())
		if text == "" {
			continue
		}
		if strings.HasSuffix(name, "NOTES.txt") {
			fmt.Fprintf(os.Stderr, "%s\n", text)
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s/%s\n%s\n", chart["name"], name, text)
	}
	fmt.Print(out.String())
	return nil
}

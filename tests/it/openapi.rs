//! docs/openapi.yaml is a valid OpenAPI 3.0 document (openapi-spec-validator
//! from the CI venv) and cannot drift from the code: it lists exactly the
//! routes and methods registered in src/http/mod.rs, every literal it puts
//! where the router has a path parameter is a match arm of src/http/api.rs,
//! and every field of the API's request `Body` is described.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    let venv =
        std::env::var("SAFEPOINT_CI_VENV").unwrap_or_else(|_| "/opt/safepoint-ci/venv".into());
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "{} not found: run .ci/setup (it creates the venv with openapi-spec-validator) or set SAFEPOINT_CI_VENV",
        python.display()
    );
    python
}

/// Validates the spec and returns, as JSON: `paths` (path -> methods) and
/// `request_fields` (every property a request body schema allows, through
/// `$ref` and `allOf`).
const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
spec, _ = read_from_filename(sys.argv[1])
validate(spec)
def resolve(s):
    while "$ref" in s:
        s = spec["components"]["schemas"][s["$ref"].split("/")[-1]]
    return s
def fields(s):
    s = resolve(s)
    out = set(s.get("properties", {}))
    for part in s.get("allOf", []):
        out |= fields(part)
    return out
paths, request_fields = {}, set()
for path, item in spec["paths"].items():
    paths[path] = sorted(m for m in item if m in ("get", "post", "put", "patch", "delete"))
    for method in paths[path]:
        body = item[method].get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            request_fields |= fields(body["schema"])
print(json.dumps({"paths": paths, "request_fields": sorted(request_fields)}))
"#;

/// `(path, method)` of every `.route("PATH", METHOD(handler))` in
/// src/http/mod.rs (`router` and the routers it merges).
fn router_routes(source: &str) -> BTreeSet<(String, String)> {
    let body = source
        .split_once("pub fn router(")
        .expect("src/http/mod.rs has `pub fn router(`")
        .1;
    let mut routes = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let chunk = chunk.trim_start();
        let rest = chunk.strip_prefix('"').expect("a route path literal");
        let (path, rest) = rest.split_once('"').expect("a closing quote");
        // The method router up to the next builder call: `get(a)`, `get(a).post(b)`.
        let end = [".layer(", ".fallback(", ".merge(", ".with_state(", ";"]
            .iter()
            .filter_map(|stop| rest.find(stop))
            .min()
            .unwrap_or(rest.len());
        let handlers = &rest[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0 || {
                    let before = handlers.as_bytes()[i - 1];
                    !before.is_ascii_alphanumeric() && before != b'_'
                }
            });
            if called {
                routes.insert((path.to_string(), method.to_string()));
            }
        }
    }
    assert!(!routes.is_empty(), "no routes found in src/http/mod.rs");
    routes
}

/// Segment-wise: a router `{param}` matches any spec segment.
fn matches(route: &str, spec_path: &str) -> bool {
    let (r, s): (Vec<&str>, Vec<&str>) =
        (route.split('/').collect(), spec_path.split('/').collect());
    r.len() == s.len()
        && r.iter()
            .zip(&s)
            .all(|(r, s)| r == s || (r.starts_with('{') && r.ends_with('}')))
}

/// Fields of `struct Body` in src/http/api.rs, as JSON names (camelCase).
fn body_fields(api: &str) -> Vec<String> {
    let body = api
        .split_once("struct Body {")
        .expect("src/http/api.rs has `struct Body {`")
        .1
        .split_once('}')
        .expect("end of struct Body")
        .0;
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && l.contains(':'))
        .map(|l| {
            let name = l.split(':').next().unwrap_or_default().trim();
            let mut out = String::new();
            let mut upper = false;
            for c in name.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

#[test]
fn the_openapi_description_is_valid_and_lists_exactly_the_routes_of_the_router() {
    let spec_file = root().join("docs/openapi.yaml");
    let out = std::process::Command::new(venv_python())
        .args(["-c", VALIDATE])
        .arg(&spec_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docs/openapi.yaml is not valid OpenAPI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec: BTreeMap<String, Vec<String>> =
        serde_json::from_value(parsed["paths"].clone()).unwrap();

    let mod_rs = std::fs::read_to_string(root().join("src/http/mod.rs")).unwrap();
    let api_rs = std::fs::read_to_string(root().join("src/http/api.rs")).unwrap();
    let routes = router_routes(&mod_rs);

    for (route, method) in &routes {
        let described: Vec<&String> = spec
            .iter()
            .filter(|(p, methods)| matches(route, p) && methods.contains(method))
            .map(|(p, _)| p)
            .collect();
        assert!(
            !described.is_empty(),
            "{} {route} is routed in src/http/mod.rs but not described in docs/openapi.yaml",
            method.to_uppercase()
        );
    }
    for (path, methods) in &spec {
        for method in methods {
            let route = routes
                .iter()
                .find(|(r, m)| m == method && matches(r, path))
                .unwrap_or_else(|| {
                    panic!(
                        "docs/openapi.yaml describes {} {path}, which src/http/mod.rs does not route",
                        method.to_uppercase()
                    )
                });
            // Where the router has a parameter and the spec a literal
            // (`{phase}` vs `start`), the handler must dispatch on it.
            for (r, s) in route.0.split('/').zip(path.split('/')) {
                if r.starts_with('{') && !s.starts_with('{') {
                    assert!(
                        api_rs.contains(&format!("\"{s}\" =>")),
                        "docs/openapi.yaml describes {path}, but src/http/api.rs has no `\"{s}\" =>` arm for {r}"
                    );
                }
            }
        }
    }

    let described: BTreeSet<String> =
        serde_json::from_value(parsed["request_fields"].clone()).unwrap();
    let fields = body_fields(&api_rs);
    assert!(fields.contains(&"timeoutSeconds".to_string()), "{fields:?}");
    for f in fields {
        assert!(
            described.contains(&f),
            "request field {f} of src/http/api.rs `Body` is not in any request body of docs/openapi.yaml"
        );
    }
}

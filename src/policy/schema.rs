//! Pure: checks a JSON value against the generated schema of the raw
//! documents and reports EVERY structural problem (unknown field, wrong type,
//! value not allowed, missing field), removing offending members so that
//! deserialization and the semantic checks can still run on the rest.
//!
//! Only the subset of JSON Schema that schemars emits for `raw` is supported:
//! `$ref`/`$defs`, `type`, `const`, `enum`, `properties`, `required`,
//! `additionalProperties`, `items`, `anyOf`/`oneOf` (nullable, enums of
//! consts, objects discriminated by a `const` property), integer bounds.

use serde_json::{Map, Value};

use super::suggest::{did_you_mean, one_of};
use super::yaml::join;

/// A structural problem at a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub ptr: String,
    /// Locate at the member's key (unknown/missing fields) rather than its value.
    pub at_key: bool,
    pub message: String,
    pub hint: Option<String>,
}

/// Checks `value` against `root`; returns the problems. Offending members are
/// removed from `value`. Returns `false` in `.1` when the whole value is unusable.
pub(crate) fn check(root: &Value, value: &mut Value) -> (Vec<Issue>, bool) {
    let mut w = Walker {
        root,
        issues: Vec::new(),
    };
    let ok = w.walk(root, value, "");
    (w.issues, ok)
}

/// `/spec/drill/verify/checks/0/sql` -> `spec.drill.verify.checks[0].sql`.
pub(crate) fn display_path(ptr: &str) -> String {
    let mut out = String::new();
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        "the document".to_owned()
    } else {
        out
    }
}

struct Walker<'a> {
    root: &'a Value,
    issues: Vec<Issue>,
}

impl<'a> Walker<'a> {
    fn issue(&mut self, ptr: &str, at_key: bool, message: String, hint: Option<String>) {
        self.issues.push(Issue {
            ptr: ptr.to_owned(),
            at_key,
            message,
            hint,
        });
    }

    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        // Bounded: the generated schema has no reference cycles at one level.
        for _ in 0..16 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                return schema;
            };
            let Some(name) = r.strip_prefix("#/$defs/") else {
                return schema;
            };
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(s) => schema = s,
                None => return schema,
            }
        }
        schema
    }

    /// Returns false when `value` must be removed from its parent.
    fn walk(&mut self, schema: &'a Value, value: &mut Value, ptr: &str) -> bool {
        let schema = self.resolve(schema);
        let branches = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(branches) = branches {
            return self.walk_branches(branches, value, ptr);
        }
        if !self.check_type(schema, value, ptr) {
            return false;
        }
        if !self.check_allowed(schema, value, ptr) {
            return false;
        }
        if !self.check_bounds(schema, value, ptr) {
            return false;
        }
        match value {
            Value::Object(map) => self.walk_object(schema, map, ptr),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    let mut i = 0;
                    items.retain_mut(|item| {
                        let keep = self.walk(item_schema, item, &join(ptr, &i.to_string()));
                        i += 1;
                        keep
                    });
                }
                true
            }
            _ => true,
        }
    }

    fn walk_branches(&mut self, branches: &'a [Value], value: &mut Value, ptr: &str) -> bool {
        let branches: Vec<&'a Value> = branches.iter().map(|b| self.resolve(b)).collect();
        // An enum written as oneOf of documented consts.
        if branches.iter().all(|b| b.get("const").is_some()) {
            let allowed: Vec<Value> = branches
                .iter()
                .filter_map(|b| b.get("const"))
                .cloned()
                .collect();
            let as_enum = serde_json::json!({ "enum": allowed });
            return self.check_allowed(&as_enum, value, ptr);
        }
        let is_null_branch = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
        if value.is_null() && branches.iter().any(|b| is_null_branch(b)) {
            return true;
        }
        let non_null: Vec<&'a Value> = branches
            .into_iter()
            .filter(|b| !is_null_branch(b))
            .collect();
        if let [only] = non_null.as_slice() {
            return self.walk(only, value, ptr);
        }
        if let Some(chosen) = self.discriminate(&non_null, value, ptr) {
            return match chosen {
                Some(branch) => self.walk(branch, value, ptr),
                None => false,
            };
        }
        // General case: the first branch without problems wins.
        for branch in &non_null {
            let mut probe = value.clone();
            let mut w = Walker {
                root: self.root,
                issues: Vec::new(),
            };
            if w.walk(branch, &mut probe, ptr) && w.issues.is_empty() {
                return true;
            }
        }
        self.issue(
            ptr,
            false,
            format!(
                "`{}` does not have any of the allowed shapes",
                display_path(ptr)
            ),
            None,
        );
        false
    }

    /// For object branches told apart by one `const` property (like `kind`):
    /// `Some(Some(branch))` chosen, `Some(None)` reported as wrong, `None`
    /// when the branches are not discriminated.
    fn discriminate(
        &mut self,
        branches: &[&'a Value],
        value: &Value,
        ptr: &str,
    ) -> Option<Option<&'a Value>> {
        let first = branches.first()?.get("properties")?.as_object()?;
        let (field, consts) = first.keys().find_map(|field| {
            let consts: Option<Vec<&str>> = branches
                .iter()
                .map(|b| {
                    let p = self.resolve(b.get("properties")?.get(field)?);
                    p.get("const")?.as_str()
                })
                .collect();
            let consts = consts?;
            let mut unique = consts.clone();
            unique.sort_unstable();
            unique.dedup();
            (unique.len() == consts.len()).then_some((field, consts))
        })?;
        let Some(map) = value.as_object() else {
            self.issue(
                ptr,
                false,
                format!(
                    "{} must be a mapping, found {}",
                    describe_ptr(ptr),
                    describe(value)
                ),
                None,
            );
            return Some(None);
        };
        let child = join(ptr, field);
        match map.get(field) {
            None => {
                self.issue(
                    ptr,
                    true,
                    format!("missing field `{field}`"),
                    Some(format!("add `{field}:` with {}", one_of(&consts))),
                );
                Some(None)
            }
            Some(Value::String(s)) => match consts.iter().position(|c| c == s) {
                Some(i) => Some(Some(branches[i])),
                None => {
                    self.issue(
                        &child,
                        false,
                        format!("unknown {field} `{s}`"),
                        Some(did_you_mean(s, &consts).unwrap_or_else(|| one_of(&consts))),
                    );
                    Some(None)
                }
            },
            Some(other) => {
                self.issue(
                    &child,
                    false,
                    format!("`{field}` must be a string, found {}", describe(other)),
                    Some(one_of(&consts)),
                );
                Some(None)
            }
        }
    }

    fn walk_object(&mut self, schema: &'a Value, map: &mut Map<String, Value>, ptr: &str) -> bool {
        let props: Option<&'a Map<String, Value>> =
            schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(field) {
                    let hint = props
                        .and_then(|p| p.get(field))
                        .and_then(|p| self.resolve(p).get("description"))
                        .and_then(Value::as_str)
                        .map(|d| format!("add `{field}:` ({})", first_sentence(d)))
                        .or_else(|| Some(format!("add `{field}:`")));
                    self.issue(
                        ptr,
                        true,
                        format!("missing field `{field}` in {}", describe_ptr(ptr)),
                        hint,
                    );
                }
            }
        }
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let child = join(ptr, &key);
            let keep = match (props.and_then(|p| p.get(&key)), additional) {
                (Some(prop), _) => self.walk_member(prop, map, &key, &child),
                (None, Some(Value::Bool(false))) => {
                    let allowed: Vec<&str> = props
                        .iter()
                        .flat_map(|p| p.keys())
                        .map(String::as_str)
                        .collect();
                    self.issue(
                        &child,
                        true,
                        format!("unknown field `{key}` in {}", describe_ptr(ptr)),
                        Some(did_you_mean(&key, &allowed).unwrap_or_else(|| {
                            format!("allowed fields here: {}", allowed.join(", "))
                        })),
                    );
                    false
                }
                (None, Some(extra)) if extra.is_object() => {
                    self.walk_member(extra, map, &key, &child)
                }
                (None, _) => true,
            };
            if !keep {
                map.remove(&key);
            }
        }
        true
    }

    fn walk_member(
        &mut self,
        schema: &'a Value,
        map: &mut Map<String, Value>,
        key: &str,
        ptr: &str,
    ) -> bool {
        match map.get_mut(key) {
            Some(v) => self.walk(schema, v, ptr),
            None => true,
        }
    }

    fn check_type(&mut self, schema: &Value, value: &Value, ptr: &str) -> bool {
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return true,
        };
        if types.iter().any(|t| type_matches(t, value)) {
            return true;
        }
        let wanted: Vec<&str> = types
            .iter()
            .filter(|t| **t != "null")
            .map(|t| type_noun(t))
            .collect();
        let hint = match (types.contains(&"string"), value) {
            (true, Value::Number(_) | Value::Bool(_)) => {
                Some(format!("quote the value: \"{value}\""))
            }
            (_, Value::Null) => Some("give a value or remove the field".to_owned()),
            _ => None,
        };
        self.issue(
            ptr,
            false,
            format!(
                "{} must be {}, found {}",
                describe_ptr(ptr),
                wanted.join(" or "),
                describe(value)
            ),
            hint,
        );
        false
    }

    fn check_allowed(&mut self, schema: &Value, value: &Value, ptr: &str) -> bool {
        let allowed: Vec<&Value> = match (schema.get("enum"), schema.get("const")) {
            (Some(Value::Array(vs)), _) => vs.iter().collect(),
            (None, Some(c)) => vec![c],
            _ => return true,
        };
        if allowed.contains(&value) {
            return true;
        }
        let names: Vec<&str> = allowed.iter().filter_map(|v| v.as_str()).collect();
        let hint = value
            .as_str()
            .and_then(|s| did_you_mean(s, &names))
            .unwrap_or_else(|| format!("use {}", one_of(&names)));
        let found = match value {
            Value::String(s) if s.chars().count() <= 40 => format!("`{s}`"),
            other => describe(other),
        };
        self.issue(
            ptr,
            false,
            format!("invalid value {found} for {}", describe_ptr(ptr)),
            Some(hint),
        );
        false
    }

    fn check_bounds(&mut self, schema: &Value, value: &Value, ptr: &str) -> bool {
        let Some(n) = value.as_number() else {
            return true;
        };
        let (mut min, mut max) = (f64::NEG_INFINITY, f64::INFINITY);
        match schema.get("format").and_then(Value::as_str) {
            Some("uint32") => (min, max) = (0.0, f64::from(u32::MAX)),
            Some("int32") => (min, max) = (f64::from(i32::MIN), f64::from(i32::MAX)),
            Some("uint64" | "uint") => min = 0.0,
            _ => {}
        }
        if let Some(m) = schema.get("minimum").and_then(Value::as_f64) {
            min = min.max(m);
        }
        if let Some(m) = schema.get("maximum").and_then(Value::as_f64) {
            max = max.min(m);
        }
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f >= min && f <= max {
            return true;
        }
        self.issue(
            ptr,
            false,
            format!("{} is out of range: {n}", describe_ptr(ptr)),
            Some(format!("use a whole number from {min} to {max}")),
        );
        false
    }
}

fn type_matches(t: &str, value: &Value) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    }
}

fn type_noun(t: &str) -> &'static str {
    match t {
        "boolean" => "true or false",
        "string" => "a string",
        "object" => "a mapping",
        "array" => "a list",
        "number" => "a number",
        "integer" => "a whole number",
        _ => "a value",
    }
}

fn describe_ptr(ptr: &str) -> String {
    if ptr.is_empty() {
        "the document".to_owned()
    } else {
        format!("`{}`", display_path(ptr))
    }
}

/// A short description of a found value, never long enough to leak much.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string `{s}`"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

fn first_sentence(d: &str) -> String {
    let one_line = d.replace('\n', " ");
    match one_line.split_once(". ") {
        Some((first, _)) => first.trim_end_matches('.').to_owned(),
        None => one_line.trim_end_matches('.').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(value: Value) -> (Vec<Issue>, Value) {
        let schema = crate::policy::json_schema();
        let mut v = value;
        let (issues, _) = check(&schema, &mut v);
        (issues, v)
    }

    #[test]
    fn unknown_fields_are_removed_and_reported_with_a_suggestion() {
        let (issues, v) = run(json!({
            "apiVersion": "safepoint/v1", "kind": "Storage",
            "metadata": {"name": "a", "nmae": "b"},
            "spec": {"type": "local", "path": "/x", "colour": "red"}
        }));
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert_eq!(issues[0].ptr, "/metadata/nmae");
        assert_eq!(issues[0].hint.as_deref(), Some("did you mean `name`?"));
        assert!(
            issues[1]
                .hint
                .as_deref()
                .is_some_and(|h| h.starts_with("allowed fields here:"))
        );
        assert!(v["spec"].get("colour").is_none());
    }

    #[test]
    fn unknown_kind_is_reported_with_the_kinds() {
        let (issues, _) = run(json!({"apiVersion": "safepoint/v1", "kind": "Storag"}));
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].ptr, "/kind");
        assert_eq!(issues[0].hint.as_deref(), Some("did you mean `Storage`?"));
    }

    #[test]
    fn wrong_types_and_enum_values_are_reported() {
        let (issues, _) = run(json!({
            "apiVersion": "safepoint/v1", "kind": "BackupPolicy",
            "metadata": {"name": 5},
            "spec": {"source": {"type": "postgress"}, "storage": "s",
                     "retention": {"keepLast": -1}, "suspend": "no"}
        }));
        let ptrs: Vec<&str> = issues.iter().map(|i| i.ptr.as_str()).collect();
        assert_eq!(
            ptrs,
            [
                "/metadata/name",
                "/spec/retention/keepLast",
                "/spec/source/type",
                "/spec/suspend"
            ]
        );
        assert_eq!(issues[2].hint.as_deref(), Some("did you mean `postgres`?"));
    }

    #[test]
    fn display_path_reads_like_yaml() {
        assert_eq!(
            display_path("/spec/drill/verify/checks/0/sql"),
            "spec.drill.verify.checks[0].sql"
        );
    }
}

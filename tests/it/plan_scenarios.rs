//! Planner scenarios as data (tests/scenarios/<name>/): `policies.yaml` (real
//! policy documents, loaded by `policy::load`), `observed.yaml` (an
//! `ObservedState`), `scenario.yaml` (`now`, optional `options`). Each
//! rendered plan is pinned by an insta snapshot named after its directory.
//! New planner behaviour = new scenario directory.

use std::path::Path;

use chrono::{DateTime, Utc};
use safepoint::observed::ObservedState;
use safepoint::plan::{PlanOptions, plan};
use safepoint::policy::{PolicyFile, load};
use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

/// Minimal YAML -> JSON for test data: maps, sequences, scalars (plain
/// `null`/`~`, booleans and integers are typed, everything else is a string).
fn yaml_to_json(text: &str) -> Value {
    enum Frame {
        Map(Map<String, Value>, Option<String>),
        Seq(Vec<Value>),
    }
    fn put(stack: &mut [Frame], root: &mut Option<Value>, v: Value) {
        match stack.last_mut() {
            Some(Frame::Map(map, key)) => match key.take() {
                Some(k) => {
                    map.insert(k, v);
                }
                None => *key = Some(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
            },
            Some(Frame::Seq(items)) => items.push(v),
            None => *root = Some(v),
        }
    }
    let mut stack = Vec::new();
    let mut root = None;
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, _) = next.expect("valid yaml");
        match event {
            Event::MappingStart(..) => stack.push(Frame::Map(Map::new(), None)),
            Event::SequenceStart(..) => stack.push(Frame::Seq(Vec::new())),
            Event::MappingEnd | Event::SequenceEnd => {
                let v = match stack.pop() {
                    Some(Frame::Map(m, _)) => Value::Object(m),
                    Some(Frame::Seq(s)) => Value::Array(s),
                    None => unreachable!("unbalanced yaml"),
                };
                put(&mut stack, &mut root, v);
            }
            Event::Scalar(text, style, ..) => {
                let v = if style != ScalarStyle::Plain {
                    Value::String(text.into_owned())
                } else if text == "null" || text == "~" {
                    Value::Null
                } else if let Ok(b) = text.parse::<bool>() {
                    Value::Bool(b)
                } else if let Ok(n) = text.parse::<i64>() {
                    Value::from(n)
                } else {
                    Value::String(text.into_owned())
                };
                put(&mut stack, &mut root, v);
            }
            _ => {}
        }
    }
    root.unwrap_or(Value::Null)
}

fn run(dir: &Path) -> String {
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let desired = load(&[PolicyFile::new("policies.yaml", read("policies.yaml"))])
        .unwrap_or_else(|d| panic!("{}: invalid policies: {d:#?}", dir.display()));
    let observed: ObservedState =
        serde_json::from_value(yaml_to_json(&read("observed.yaml"))).expect("observed.yaml");
    let scenario = yaml_to_json(&read("scenario.yaml"));
    let now: DateTime<Utc> = scenario["now"]
        .as_str()
        .expect("now")
        .parse()
        .expect("rfc3339");
    let mut options = PlanOptions::default();
    if let Some(n) = scenario["options"]["max_deletions"].as_u64() {
        options.max_deletions = n as usize;
    }
    if let Some(b) = scenario["options"]["prune_orphans"].as_bool() {
        options.prune_orphans = b;
    }
    plan(&desired, &observed, now, &options).render()
}

#[test]
fn planner_scenarios_render_as_snapshotted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/scenarios")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 16, "only {} scenarios", dirs.len());
    for dir in dirs {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let rendered = run(&dir);
        insta::with_settings!({
            prepend_module_to_snapshot => false,
            description => format!("tests/scenarios/{name}"),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, rendered);
        });
    }
}

#[test]
fn yaml_helper_types_scalars() {
    let v = yaml_to_json("a: 1\nb: \"1\"\nc: ~\nd: [true, x]\n");
    assert_eq!(
        v,
        serde_json::json!({"a": 1, "b": "1", "c": null, "d": [true, "x"]})
    );
}

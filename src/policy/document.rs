//! Pure: one YAML document -> a located, validated piece of the desired
//! state; then the cross-document checks (unique names, references).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::annotations;
use super::backup_policy::backup_policy;
use super::model::{BackupPolicy, DesiredState, NotifierSpec, StorageSpec};
use super::permissions::{self, Permissions, Subject};
use super::schema::{self, display_path};
use super::suggest::{closest, one_of};
use super::validate::{self, Sink};
use super::yaml::{self, Locations, Node, Pos, join};
use super::{Diagnostic, raw, storage, url};

/// A document that passed the per-document checks as far as its name: it
/// counts for uniqueness and references even when its spec was invalid
/// (`item` is `None`), so one mistake does not cascade.
pub(crate) struct Checked {
    file: String,
    /// `None` when the name is invalid (reported): references are still checked.
    name: Option<String>,
    pos: Pos,
    item: Item,
    ack: annotations::Ack,
}

enum Item {
    Storage(Option<StorageSpec>),
    Notifier(Option<NotifierSpec>),
    Policy(Option<Box<BackupPolicy>>, Vec<Reference>),
}

impl Item {
    fn kind(&self) -> &'static str {
        match self {
            Item::Storage(_) => "Storage",
            Item::Notifier(_) => "Notifier",
            Item::Policy(..) => "BackupPolicy",
        }
    }
}

/// A name a policy refers to, with where it is written.
struct Reference {
    to_storage: bool,
    name: String,
    pos: Pos,
}

pub(crate) fn check(
    file: &str,
    schema: &Value,
    node: &Node,
    perms: &Permissions,
    diags: &mut Vec<Diagnostic>,
) -> Option<Checked> {
    let (mut value, locs) = yaml::to_json(node);
    if value.is_null() {
        return None; // an empty document (e.g. a trailing `---`)
    }
    let mut sink = Sink {
        file,
        locs: &locs,
        diags,
    };
    let structurally_ok = structure(&mut sink, schema, &mut value);
    let kind = value.get("kind").and_then(Value::as_str)?.to_owned();
    if let Some(map) = value.as_object_mut() {
        map.remove("kind");
    }
    let doc = Doc {
        value,
        file,
        perms,
        structurally_ok,
    };
    // A bad name is reported, and the spec is still checked; the document
    // only takes part in the cross-document checks when its name is usable.
    let (name, item, ack) = match kind.as_str() {
        "Storage" => doc.storage(&mut sink)?,
        "Notifier" => doc.notifier(&mut sink)?,
        "BackupPolicy" => doc.policy(&mut sink)?,
        _ => return None, // reported by the schema check
    };
    Some(Checked {
        file: file.to_owned(),
        pos: locs.value("/metadata/name"),
        name,
        item,
        ack,
    })
}

/// Reports what the schema rejects (the value is cleaned of it) and secrets
/// written inline; true when the schema found nothing.
fn structure(sink: &mut Sink<'_>, schema: &Value, value: &mut Value) -> bool {
    let (issues, _) = schema::check(schema, value);
    let structurally_ok = issues.is_empty();
    for i in issues {
        let pos = if i.at_key {
            sink.locs.key(&i.ptr)
        } else {
            sink.locs.value(&i.ptr)
        };
        sink.at(pos, i.message, i.hint);
    }
    let mut secrets = Vec::new();
    url::find_inline_secrets(value, "", &mut secrets);
    for s in secrets {
        let message = format!("{} (`{}`)", s.message, display_path(&s.ptr));
        sink.err(&s.ptr, message, s.hint);
    }
    structurally_ok
}

/// A document of a known kind, about to be checked as that kind.
struct Doc<'a> {
    /// Without its `kind`.
    value: Value,
    file: &'a str,
    perms: &'a Permissions,
    /// The schema found nothing (a deserialization failure is then reported).
    structurally_ok: bool,
}

/// What the checks of one kind give: the usable name, the item, the
/// acknowledgements it carries.
type Parts = (Option<String>, Item, annotations::Ack);

impl Doc<'_> {
    fn storage(self, sink: &mut Sink<'_>) -> Option<Parts> {
        let doc: raw::StorageDocument = deserialize(self.value, sink, self.structurally_ok)?;
        let name = header(sink, &doc.api_version, &doc.metadata);
        let ack = annotations::read(sink, "Storage", &doc.metadata);
        let spec = storage::storage(sink, &doc.metadata.name, doc.spec);
        let subject = subject("Storage", &doc.metadata, self.file);
        if let Some(s) = &spec {
            permissions::check_storage(sink, self.perms, &subject, s);
        }
        Some((name, Item::Storage(spec), ack))
    }

    fn notifier(self, sink: &mut Sink<'_>) -> Option<Parts> {
        let doc: raw::NotifierDocument = deserialize(self.value, sink, self.structurally_ok)?;
        let name = header(sink, &doc.api_version, &doc.metadata);
        let ack = annotations::read(sink, "Notifier", &doc.metadata);
        let spec = validate::notifier(sink, &doc.metadata.name, doc.spec);
        let subject = subject("Notifier", &doc.metadata, self.file);
        if let Some(n) = &spec {
            permissions::check_notifier(sink, self.perms, &subject, n);
        }
        Some((name, Item::Notifier(spec), ack))
    }

    fn policy(self, sink: &mut Sink<'_>) -> Option<Parts> {
        let doc: raw::BackupPolicyDocument = deserialize(self.value, sink, self.structurally_ok)?;
        let name = header(sink, &doc.api_version, &doc.metadata);
        let refs = references(sink.locs, &doc.spec);
        let subject = subject("BackupPolicy", &doc.metadata, self.file);
        let ack = annotations::read(sink, "BackupPolicy", &doc.metadata);
        let policy = backup_policy(
            sink,
            &doc.metadata.name,
            doc.metadata.labels.clone(),
            doc.spec,
        );
        if let Some(p) = &policy {
            permissions::check_policy(sink, self.perms, &subject, p);
        }
        Some((name, Item::Policy(policy.map(Box::new), refs), ack))
    }
}

/// What the operator's grants select a document by.
fn subject<'a>(kind: &'a str, metadata: &'a raw::Metadata, file: &'a str) -> Subject<'a> {
    Subject {
        kind,
        name: &metadata.name,
        labels: &metadata.labels,
        file,
    }
}

/// Checks `apiVersion` and `metadata.name`; the name when it is usable.
fn header(sink: &mut Sink<'_>, api_version: &str, metadata: &raw::Metadata) -> Option<String> {
    validate::api_version(sink, api_version);
    validate::name(sink, &metadata.name).then(|| metadata.name.clone())
}

fn references(locs: &Locations, spec: &raw::BackupPolicySpec) -> Vec<Reference> {
    let mut refs = vec![Reference {
        to_storage: true,
        name: spec.storage.clone(),
        pos: locs.value("/spec/storage"),
    }];
    for (i, n) in spec
        .alerts
        .iter()
        .flat_map(|a| a.notifiers.iter())
        .enumerate()
    {
        refs.push(Reference {
            to_storage: false,
            name: n.clone(),
            pos: locs.value(&join("/spec/alerts/notifiers", &i.to_string())),
        });
    }
    refs
}

/// Deserializes the (schema-cleaned) value. A failure after schema problems
/// is their consequence and not reported twice.
fn deserialize<T: DeserializeOwned>(value: Value, sink: &mut Sink<'_>, report: bool) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            if report {
                let mut ptr = String::new();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            ptr = join(&ptr, &index.to_string());
                        }
                        serde_path_to_error::Segment::Map { key } => ptr = join(&ptr, key),
                        _ => {}
                    }
                }
                let message = format!("invalid {}: {}", display_path(&ptr), e.inner());
                sink.err(&ptr, message, None);
            }
            None
        }
    }
}

/// Cross-document checks (unique names per kind, references), then the state.
pub(crate) fn assemble(docs: Vec<Checked>, diags: &mut Vec<Diagnostic>) -> DesiredState {
    let mut first: BTreeMap<(&'static str, String), (String, usize)> = BTreeMap::new();
    let mut unique = Vec::new();
    for doc in docs {
        let Some(name) = doc.name.clone() else {
            unique.push(doc);
            continue;
        };
        let key = (doc.item.kind(), name);
        if let Some((file, line)) = first.get(&key) {
            diags.push(Diagnostic {
                file: doc.file.clone(),
                line: doc.pos.line,
                column: doc.pos.col,
                message: format!(
                    "duplicate {} name `{}` (first defined at {file}:{line})",
                    key.0, key.1
                ),
                hint: Some("names must be unique per kind; rename one of the two".to_owned()),
            });
            continue;
        }
        first.insert(key, (doc.file.clone(), doc.pos.line));
        unique.push(doc);
    }
    let names = |kind: &str| -> Vec<String> {
        first
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    };
    let storages = names("Storage");
    let notifiers = names("Notifier");
    let mut state = DesiredState::default();
    for doc in unique {
        let ack = &mut state.acknowledged;
        ack.orphans.extend(doc.ack.orphans);
        if let (Some(n), Some(name), Item::Policy(..)) = (doc.ack.deletions, &doc.name, &doc.item) {
            ack.deletions.insert(name.clone(), n);
        }
        match doc.item {
            Item::Storage(Some(s)) => {
                state.storages.insert(s.name.clone(), s);
            }
            Item::Notifier(Some(n)) => {
                state.notifiers.insert(n.name.clone(), n);
            }
            Item::Policy(policy, refs) => {
                for r in refs {
                    let (known, kind) = if r.to_storage {
                        (&storages, "Storage")
                    } else {
                        (&notifiers, "Notifier")
                    };
                    if !known.contains(&r.name) {
                        diags.push(unknown_reference(&doc.file, &r, kind, known));
                    }
                }
                if let Some(p) = policy {
                    state.policies.insert(p.name.clone(), *p);
                }
            }
            Item::Storage(None) | Item::Notifier(None) => {}
        }
    }
    state
}

fn unknown_reference(file: &str, r: &Reference, kind: &str, known: &[String]) -> Diagnostic {
    let what = kind.to_lowercase();
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    let hint = match (closest(&r.name, &known), known.is_empty()) {
        (Some(c), _) => format!("did you mean `{c}`?"),
        (None, true) => format!("no {kind} document is defined; add one with `kind: {kind}`"),
        (None, false) => format!("known {what}s: {}", one_of(&known)),
    };
    Diagnostic {
        file: file.to_owned(),
        line: r.pos.line,
        column: r.pos.col,
        message: format!("unknown {what} `{}`", r.name),
        hint: Some(hint),
    }
}

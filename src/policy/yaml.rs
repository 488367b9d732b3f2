//! Pure: YAML text -> documents of marked nodes (every key and value keeps its
//! line/column), resolved with the YAML 1.2 core schema, then -> JSON values
//! plus a JSON-pointer -> position table used to locate every diagnostic.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Number, Value};

/// Upper bound on nodes produced by alias expansion (billion laughs guard).
const MAX_ALIAS_NODES: usize = 10_000;
/// Upper bound on nesting (mappings and sequences inside each other). A policy
/// is a few levels deep; without a bound a file of `[[[[…` overflows the
/// stack of every recursive walk over the tree (found by fuzzing).
const MAX_DEPTH: usize = 64;

/// A position in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// A problem found while reading YAML (before any schema is involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlProblem {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Map(Vec<Entry>),
    Seq(Vec<Node>),
    Scalar {
        text: String,
        style: ScalarStyle,
        /// `!!str` and friends; `None` when untagged.
        tag: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
    /// Number of nodes in this subtree (bounds alias expansion).
    size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// The documents of one file that parsed, and the problems found. A syntax
/// error ends the file: documents before it are still returned.
#[derive(Debug, Default)]
pub(crate) struct ParsedFile {
    pub documents: Vec<Node>,
    pub problems: Vec<YamlProblem>,
}

enum Frame {
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        /// The key waiting for its value; `false` = a duplicate, dropped.
        pending_key: Option<(String, Pos, bool)>,
    },
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    documents: Vec<Node>,
    problems: Vec<YamlProblem>,
}

/// Parses every document of `text`.
pub(crate) fn parse(text: &str) -> ParsedFile {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        documents: Vec::new(),
        problems: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                if let Err(problem) = b.event(event, span) {
                    b.problems.push(problem);
                    break;
                }
            }
            Err(err) => {
                b.problems.push(syntax_problem(&err));
                break;
            }
        }
    }
    ParsedFile {
        documents: b.documents,
        problems: b.problems,
    }
}

fn syntax_problem(err: &ScanError) -> YamlProblem {
    YamlProblem {
        pos: Pos {
            line: err.marker().line(),
            col: err.marker().col() + 1,
        },
        message: format!("yaml syntax error: {}", err.info()),
        hint: Some(
            "fix the YAML syntax (indentation, quoting, `key: value` pairs); \
             the rest of this file was not checked"
                .to_owned(),
        ),
    }
}

impl Frame {
    fn map(pos: Pos, anchor: usize) -> Frame {
        Frame::Map {
            pos,
            anchor,
            entries: Vec::new(),
            pending_key: None,
        }
    }

    fn seq(pos: Pos, anchor: usize) -> Frame {
        Frame::Seq {
            pos,
            anchor,
            items: Vec::new(),
        }
    }
}

impl Builder {
    /// Starts a mapping or sequence at `pos`, unless it nests too deep.
    fn open(&mut self, frame: Frame, pos: Pos) -> Result<(), YamlProblem> {
        if self.stack.len() < MAX_DEPTH {
            self.stack.push(frame);
            return Ok(());
        }
        Err(YamlProblem {
            pos,
            message: format!("yaml nesting deeper than {MAX_DEPTH} levels"),
            hint: Some(
                "a policy document is a few levels deep: look for unclosed `[`/`{` or \
                 runaway indentation; the rest of this file was not checked"
                    .to_owned(),
            ),
        })
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlProblem> {
        let pos = Pos::of(&span);
        match event {
            Event::DocumentStart(_) => {
                self.anchors.clear();
                self.alias_nodes = 0;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::MappingStart(anchor, tag) => {
                reject_tag(tag.as_deref(), pos)?;
                self.open(Frame::map(pos, anchor), pos)?;
            }
            Event::SequenceStart(anchor, tag) => {
                reject_tag(tag.as_deref(), pos)?;
                self.open(Frame::seq(pos, anchor), pos)?;
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let size = 1 + entries.iter().map(|e| e.value.size).sum::<usize>();
                    let kind = NodeKind::Map(entries);
                    self.finish(Node { kind, pos, size }, anchor)?;
                }
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { pos, anchor, items }) = self.stack.pop() {
                    let size = 1 + items.iter().map(|n| n.size).sum::<usize>();
                    let kind = NodeKind::Seq(items);
                    self.finish(Node { kind, pos, size }, anchor)?;
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = scalar_tag(tag.as_deref(), pos)?;
                let kind = NodeKind::Scalar {
                    text: text.into_owned(),
                    style,
                    tag,
                };
                self.finish(Node { kind, pos, size: 1 }, anchor)?;
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(YamlProblem {
                        pos,
                        message: "yaml alias refers to an unknown anchor".to_owned(),
                        hint: Some("define the anchor (`&name`) before using it (`*name`)".into()),
                    });
                };
                self.alias_nodes += node.size;
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(YamlProblem {
                        pos,
                        message: format!(
                            "yaml aliases expand to more than {MAX_ALIAS_NODES} nodes (alias bomb)"
                        ),
                        hint: Some("write the values out instead of nesting aliases".into()),
                    });
                }
                let mut node = node.clone();
                node.pos = pos;
                self.finish(node, 0)?;
            }
        }
        Ok(())
    }

    /// Attaches a completed node to its parent (or ends the document).
    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), YamlProblem> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let NodeKind::Scalar { text, .. } = node.kind else {
                        return Err(YamlProblem {
                            pos: node.pos,
                            message: "mapping keys must be plain strings".to_owned(),
                            hint: Some("use `name: value` pairs with simple names".into()),
                        });
                    };
                    let first = entries.iter().find(|e| e.key == text);
                    if let Some(first) = first {
                        self.problems.push(YamlProblem {
                            pos: node.pos,
                            message: format!(
                                "duplicate key `{text}` (first at line {})",
                                first.key_pos.line
                            ),
                            hint: Some("remove one of the two entries".into()),
                        });
                    }
                    *pending_key = Some((text, node.pos, first.is_none()));
                }
                Some((key, key_pos, keep)) => {
                    if keep {
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                    }
                }
            },
        }
        Ok(())
    }
}

fn reject_tag(tag: Option<&Tag>, pos: Pos) -> Result<(), YamlProblem> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.is_yaml_core_schema() && (tag.suffix == "map" || tag.suffix == "seq") => {
            Ok(())
        }
        Some(tag) => Err(unsupported_tag(tag, pos)),
    }
}

fn scalar_tag(tag: Option<&Tag>, pos: Pos) -> Result<Option<String>, YamlProblem> {
    match tag {
        None => Ok(None),
        Some(tag)
            if tag.is_yaml_core_schema()
                && matches!(
                    tag.suffix.as_str(),
                    "str" | "int" | "float" | "bool" | "null"
                ) =>
        {
            Ok(Some(tag.suffix.clone()))
        }
        Some(tag) => Err(unsupported_tag(tag, pos)),
    }
}

fn unsupported_tag(tag: &Tag, pos: Pos) -> YamlProblem {
    YamlProblem {
        pos,
        message: format!("unsupported yaml tag `{tag}`"),
        hint: Some(
            "remove the tag; only !!str, !!int, !!float, !!bool and !!null are allowed".into(),
        ),
    }
}

/// Where each JSON pointer (`/spec/source/url`) came from.
#[derive(Debug, Default, Clone)]
pub(crate) struct Locations {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

impl Locations {
    /// The key of the member at `ptr` when it has one, else its value.
    pub fn key(&self, ptr: &str) -> Pos {
        self.keys
            .get(ptr)
            .or_else(|| self.values.get(ptr))
            .copied()
            .unwrap_or_else(|| self.nearest(ptr))
    }

    /// The value at `ptr` for scalars; for maps and lists, their key.
    pub fn value(&self, ptr: &str) -> Pos {
        self.values
            .get(ptr)
            .or_else(|| self.keys.get(ptr))
            .copied()
            .unwrap_or_else(|| self.nearest(ptr))
    }

    /// The closest located ancestor (for members that do not exist).
    fn nearest(&self, ptr: &str) -> Pos {
        let mut p = ptr;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if let Some(pos) = self.keys.get(p).or_else(|| self.values.get(p)) {
                return *pos;
            }
        }
        self.values.get("").copied().unwrap_or_default()
    }
}

/// Appends one JSON-pointer segment, escaped per RFC 6901.
pub(crate) fn join(ptr: &str, segment: &str) -> String {
    format!("{ptr}/{}", segment.replace('~', "~0").replace('/', "~1"))
}

/// Converts a document to JSON, recording positions.
pub(crate) fn to_json(node: &Node) -> (Value, Locations) {
    let mut locs = Locations::default();
    let value = convert(node, "", &mut locs);
    (value, locs)
}

fn convert(node: &Node, ptr: &str, locs: &mut Locations) -> Value {
    match &node.kind {
        NodeKind::Map(entries) => {
            locs.values.entry(ptr.to_owned()).or_insert(node.pos);
            let mut map = Map::new();
            for e in entries {
                let child = join(ptr, &e.key);
                locs.keys.insert(child.clone(), e.key_pos);
                let v = convert(&e.value, &child, locs);
                map.insert(e.key.clone(), v);
            }
            Value::Object(map)
        }
        NodeKind::Seq(items) => {
            locs.values.entry(ptr.to_owned()).or_insert(node.pos);
            let values = items
                .iter()
                .enumerate()
                .map(|(i, n)| convert(n, &join(ptr, &i.to_string()), locs))
                .collect();
            Value::Array(values)
        }
        NodeKind::Scalar { text, style, tag } => {
            locs.values.insert(ptr.to_owned(), node.pos);
            resolve_scalar(text, *style, tag.as_deref())
        }
    }
}

/// YAML 1.2 core schema: quoted and block scalars are strings; plain ones may
/// be null, booleans, integers or floats.
pub(crate) fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    if tag == Some("str") || style != ScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = resolve_int(text) {
        return Value::Number(n);
    }
    if is_float(text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

fn resolve_int(text: &str) -> Option<Number> {
    let (radix, digits) = if let Some(hex) = text.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = text.strip_prefix("0o") {
        (8, oct)
    } else {
        (10, text)
    };
    let unsigned = digits.strip_prefix(['-', '+']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if radix != 10 && unsigned.len() != digits.len() {
        return None;
    }
    if let Ok(u) = u64::from_str_radix(digits.trim_start_matches('+'), radix) {
        return Some(Number::from(u));
    }
    if let Ok(i) = i64::from_str_radix(digits, radix) {
        return Some(Number::from(i));
    }
    // Too large for 64 bits: keep it a float, range checks will reject it.
    digits.parse::<f64>().ok().and_then(Number::from_f64)
}

fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> (Value, Locations) {
        let parsed = parse(text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        assert_eq!(parsed.documents.len(), 1);
        to_json(&parsed.documents[0])
    }

    #[test]
    fn plain_scalars_resolve_with_the_core_schema() {
        let (v, _) = one(
            "a: ~\nb: true\nc: 12\nd: -3\ne: 1.5\nf: '12'\ng: v*\nh:\ni: 0x1F\nj: 1e3\nk: !!str 7\nl: 1h30m\n",
        );
        assert_eq!(
            v,
            json!({"a": null, "b": true, "c": 12, "d": -3, "e": 1.5, "f": "12", "g": "v*",
                   "h": null, "i": 31, "j": 1000.0, "k": "7", "l": "1h30m"})
        );
    }

    #[test]
    fn every_key_and_value_is_located() {
        let (_, locs) = one("spec:\n  source:\n    url: x\n  list:\n    - a\n    - b\n");
        assert_eq!(locs.key("/spec/source"), Pos { line: 2, col: 3 });
        assert_eq!(locs.value("/spec/source/url"), Pos { line: 3, col: 10 });
        assert_eq!(locs.value("/spec/list/1"), Pos { line: 6, col: 7 });
        assert_eq!(locs.key("/spec/source/missing"), Pos { line: 2, col: 3 });
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second() {
        let parsed = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].pos.line, 3);
        assert!(parsed.problems[0].message.contains("first at line 1"));
    }

    #[test]
    fn anchors_and_aliases_are_expanded() {
        let (v, _) = one("base: &b {x: 1}\ncopy: *b\n");
        assert_eq!(v, json!({"base": {"x": 1}, "copy": {"x": 1}}));
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let parsed = parse(&text);
        assert_eq!(parsed.problems.len(), 1);
        assert!(parsed.problems[0].message.contains("alias bomb"));
    }

    #[test]
    fn syntax_error_keeps_earlier_documents() {
        let parsed = parse("a: 1\n---\nb: [1, 2\nc: 3\n");
        assert_eq!(parsed.documents.len(), 1);
        assert_eq!(parsed.problems.len(), 1);
        assert!(parsed.problems[0].message.starts_with("yaml syntax error"));
    }

    #[test]
    fn multi_document_stream_yields_each_document() {
        let parsed = parse("---\na: 1\n---\nb: 2\n...\n---\nc: 3\n");
        assert_eq!(parsed.documents.len(), 3);
    }
}

//! Architecture tidiness: the pure modules decide without touching the world.

const PURE: &[&str] = &[
    "src/model",
    "src/policy",
    "src/plan",
    "src/status.rs",
    "src/pitr_status.rs",
    "src/observed.rs",
    "src/audit.rs",
    "src/report.rs",
    "src/notify/alerts.rs",
    "src/notify/payload.rs",
    "src/http/timeline.rs",
    "src/http/view.rs",
];
const FORBIDDEN: &[&str] = &[
    "tokio::", "sqlx", "git2", "lettre", "std::fs", "std::env", "::now()", "async fn", "std::net",
    "rand::",
];

/// Unit tests of a module: `tests.rs`, `*_tests.rs`, or any file of a
/// module's `tests/` directory (`src/policy/tests/source.rs`). They may do
/// IO (read fixtures) and are not held to the size limits.
fn is_test_file(path: &std::path::Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path
            .parent()
            .and_then(|dir| dir.file_name())
            .is_some_and(|dir| dir == "tests")
}

fn rust_files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn pure_modules_use_no_io_clock_or_async() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for p in PURE {
        rust_files(&root.join(p), &mut files);
    }
    assert!(files.len() >= 4, "pure modules found: {files:?}");
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may do IO (e.g. read fixtures).
        if is_test_file(&file) {
            continue;
        }
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                if line.contains(word) {
                    problems.push(format!(
                        "{}:{}: `{word}` in a pure module",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- layers ----------------------------------------------------------------

/// The layer of every module (`src/<name>` or `src/<name>/<sub>`; the most
/// specific entry wins). A module may import its own layer and the layers
/// below it, never one above; no two modules may import each other, even
/// through others. See docs/ARCHITECTURE.md.
const LAYERS: &[(&str, Layer)] = &[
    ("model", Layer::Model),
    ("policy", Layer::Core),
    ("plan", Layer::Core),
    ("observed", Layer::Core),
    ("status", Layer::Core),
    ("pitr_status", Layer::Core),
    ("audit", Layer::Core),
    ("report", Layer::Core),
    ("drill/verdict", Layer::Core),
    ("notify/alerts", Layer::Core),
    ("notify/payload", Layer::Core),
    ("git", Layer::Io),
    ("catalog", Layer::Io),
    ("storage", Layer::Io),
    ("executor", Layer::Io),
    ("lock", Layer::Io),
    ("lease", Layer::Io),
    ("settings", Layer::Io),
    // The engine's use cases, one file each (listed so the cycle check sees
    // them apart: `cycle` runs drills, drills restore through `restore`).
    ("engine", Layer::Engine),
    ("engine/backup", Layer::Engine),
    ("engine/context", Layer::Engine),
    ("engine/cycle", Layer::Engine),
    ("engine/execute", Layer::Engine),
    ("engine/ids", Layer::Engine),
    ("engine/import", Layer::Engine),
    ("engine/observe", Layer::Engine),
    ("engine/pitr", Layer::Engine),
    ("engine/pitr_prune", Layer::Engine),
    ("engine/pitr_restore", Layer::Engine),
    ("engine/pitr_start", Layer::Engine),
    ("engine/pitr_window", Layer::Engine),
    ("engine/prune", Layer::Engine),
    ("engine/refresh", Layer::Engine),
    ("engine/releases", Layer::Engine),
    ("engine/restore", Layer::Engine),
    ("drill", Layer::Engine),
    ("deploy", Layer::Engine),
    ("pins", Layer::Engine),
    ("preview", Layer::Engine),
    ("daemon", Layer::App),
    ("jobs", Layer::App),
    ("metrics", Layer::App),
    ("notify", Layer::App),
    ("http", Layer::App),
    ("monitor", Layer::App),
    ("replica", Layer::App),
    ("cli", Layer::Cli),
];

/// Layer entries whose submodules are modules of their own in the import
/// graph: their files import each other through `super::` paths, and a
/// cycle between two of them (e.g. `cli/commands` -> `cli/deploy` ->
/// `cli/commands`) is as much a cycle as one between layers.
const SPLIT: &[&str] = &["cli"];

/// Imports that close a cycle today, each with its reason: skipped by the
/// cycle check. Shrink only.
const KNOWN_CYCLE_EDGES: &[(&str, &str, &str)] = &[];

/// Upward imports that are known debts, each with its reason. Shrink only.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Model,
    Core,
    Io,
    Engine,
    App,
    Cli,
}

/// `src/a/b.rs` -> `a/b`, `src/a/mod.rs` -> `a`, `src/a.rs` -> `a`.
fn module_of(root: &std::path::Path, file: &std::path::Path) -> Option<String> {
    let rel = file.strip_prefix(root.join("src")).ok()?;
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => None,
        _ => Some(parts.join("/")),
    }
}

/// The layer entry naming `module` (longest prefix) and that entry.
fn layer_of(module: &str) -> Option<(&'static str, Layer)> {
    LAYERS
        .iter()
        .filter(|(m, _)| module == *m || module.starts_with(&format!("{m}/")))
        .max_by_key(|(m, _)| m.len())
        .copied()
}

/// The node of `module` in the import graph: its layer-table entry, or the
/// module itself under a `SPLIT` entry.
fn node_of(module: &str) -> Option<String> {
    let (entry, _) = layer_of(module)?;
    Some(if SPLIT.contains(&entry) {
        module.to_string()
    } else {
        entry.to_string()
    })
}

type Modules = std::collections::BTreeSet<String>;
type Graph = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// The node an absolute path (`["cli", "table", "render"]`) names: the
/// longest prefix that is a module of the crate.
fn resolve(path: &[String], known: &Modules) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("/"))
        .find(|m| known.contains(m))
        .and_then(|m| node_of(&m))
}

/// The nodes that `code` (of `module`) names through `crate::` and
/// `super::` paths, in `use` lines (one level of `{a, b::c}` included) and
/// inline.
fn imports(code: &str, module: &str, known: &Modules) -> std::collections::BTreeSet<String> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = std::collections::BTreeSet::new();
    let starts = code
        .match_indices("crate::")
        .chain(code.match_indices("super::"));
    for (i, _) in starts {
        // `super::super::x` is one path, read from its first `super`.
        if code[..i].chars().next_back().is_some_and(is_path) {
            continue;
        }
        let path: String = code[i..].chars().take_while(|c| is_path(*c)).collect();
        let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
        let mut base: Vec<String> = Vec::new();
        if segments.peek() == Some(&"crate") {
            segments.next();
        } else {
            base = module.split('/').map(str::to_string).collect();
            while segments.peek() == Some(&"super") {
                segments.next();
                base.pop();
            }
        }
        base.extend(segments.map(str::to_string));
        let rest = &code[i + path.len()..];
        let group = rest
            .strip_prefix('{')
            .and_then(|g| g.split_once('}'))
            .map(|(inner, _)| inner);
        let items: Vec<Vec<String>> = match group {
            Some(inner) => inner
                .split(',')
                .map(|item| {
                    let item: String = item.trim().chars().take_while(|c| is_path(*c)).collect();
                    let mut full = base.clone();
                    full.extend(
                        item.split("::")
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(str::to_string),
                    );
                    full
                })
                .collect(),
            None => vec![base],
        };
        out.extend(items.iter().filter_map(|p| resolve(p, known)));
    }
    out
}

/// The crate's modules (one per source file) and every module's imports,
/// as graph nodes (tests excluded).
fn import_graph() -> Graph {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let modules: Vec<(String, std::path::PathBuf)> = files
        .into_iter()
        .filter(|f| !is_test_file(f))
        .filter_map(|f| Some((module_of(root, &f)?, f)))
        .collect();
    let known: Modules = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let node = node_of(module)
            .unwrap_or_else(|| panic!("module {module} has no layer in tests/it/tidy.rs LAYERS"));
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let targets = imports(&code, module, &known);
        let edges = graph.entry(node.clone()).or_default();
        edges.extend(targets.into_iter().filter(|t| *t != node));
    }
    graph
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let mut problems = Vec::new();
    for (from, targets) in import_graph() {
        let from_layer = layer_of(&from).unwrap().1;
        for to in targets {
            let to_layer = layer_of(&to).unwrap().1;
            let known = KNOWN_UPWARD.iter().any(|(f, t, _)| *f == from && *t == to);
            if to_layer > from_layer && !known {
                problems.push(format!(
                    "{from} ({from_layer:?}) imports {to} ({to_layer:?}): move the shared type down or the caller up"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every cycle of `graph` a depth-first search closes (as `a -> b -> a`),
/// except through `KNOWN_CYCLE_EDGES`. A module and its parent (e.g.
/// `drill/verdict` in `drill`, `cli/commands/plan` in `cli/commands`) are
/// one unit.
fn cycles(graph: &Graph) -> Vec<String> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            cycles.push(cycle.join(" -> "));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if node.starts_with(&format!("{next}/")) || next.starts_with(&format!("{node}/")) {
                continue;
            }
            if KNOWN_CYCLE_EDGES
                .iter()
                .any(|(f, t, _)| *f == node && *t == next)
            {
                continue;
            }
            visit(next, graph, path, done, cycles);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_import_cycles() {
    let found = cycles(&import_graph());
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_sees_cycles_between_cli_submodules() {
    // The cycle the CLI had: the dispatcher called the deploy verb, which
    // took `loaded_state` from the dispatcher.
    let known: Modules = ["cli", "cli/commands", "cli/deploy", "cli/commands/shared"]
        .map(String::from)
        .into();
    let dispatcher = imports("super::deploy::run(ctx).await", "cli/commands", &known);
    let deploy = imports("use super::commands::loaded_state;", "cli/deploy", &known);
    let graph: Graph = [
        ("cli/commands".to_string(), dispatcher),
        ("cli/deploy".to_string(), deploy),
    ]
    .into();
    assert_eq!(
        cycles(&graph),
        ["cli/commands -> cli/deploy -> cli/commands"]
    );
    // Through a shared helper module there is none.
    let deploy = imports(
        "use crate::cli::commands::shared::loaded_state;",
        "cli/deploy",
        &known,
    );
    assert_eq!(deploy, ["cli/commands/shared".to_string()].into());
}

#[test]
fn the_layer_checks_see_real_imports() {
    let graph = import_graph();
    let known: Modules = graph.keys().cloned().collect();
    assert!(graph["engine/cycle"].contains("plan"), "{graph:?}");
    assert!(graph["engine/cycle"].contains("drill"), "{graph:?}");
    assert!(
        graph["cli/commands/restore"].contains("engine"),
        "{graph:?}"
    );
    assert!(
        graph["cli/commands/deploy"].contains("cli/commands/shared"),
        "{graph:?}"
    );
    assert!(graph["daemon"].contains("jobs"), "{graph:?}");
    let notify = imports("use crate::notify::alerts::Problem;", "monitor", &known);
    assert!(notify.contains("notify/alerts"), "{notify:?}");
    assert!(imports("crate::notify::deliver(x)", "monitor", &known).contains("notify"));
    let group = imports("use crate::{git, jobs::Job};", "daemon", &known);
    assert_eq!(group, ["git".to_string(), "jobs".to_string()].into());
    let up = imports(
        "use super::super::table::render;",
        "cli/commands/list",
        &known,
    );
    assert_eq!(up, ["cli/table".to_string()].into());
    assert_eq!(layer_of("drill/verdict").unwrap().1, Layer::Core);
    assert_eq!(layer_of("drill").unwrap().1, Layer::Engine);
    assert_eq!(layer_of("executor/sql").unwrap().1, Layer::Io);
}

// ---- sizes -------------------------------------------------------------------

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// Files and functions over the limits: none since issue #12 paid the last
/// debts. Split a long file or function instead of adding it here; the test
/// fails if an entry is no longer needed, so these lists only shrink.
const KNOWN_LONG_FILES: &[&str] = &[];
const KNOWN_LONG_FNS: &[(&str, &str)] = &[];

/// (name, lines) of every `fn` in `code`: from its signature to the closing
/// brace at the signature's indentation.
fn functions(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let sig = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ]
        .iter()
        .fold(body, |s, p| s.strip_prefix(p).unwrap_or(s));
        let sig = sig.strip_prefix("async ").unwrap_or(sig);
        let Some(rest) = sig.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (trait items) ends with `;` first.
        let opens = lines[i..]
            .iter()
            .map(|l| l.trim_end())
            .find(|l| l.ends_with('{') || l.ends_with(';'));
        if opens.is_none_or(|l| l.ends_with(';')) {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            out.push((name, end + 1));
        }
    }
    out
}

#[test]
fn files_and_functions_stay_small() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut problems = Vec::new();
    let mut long_files = Vec::new();
    let mut long_fns = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if is_test_file(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let n = code.lines().count();
        if n > MAX_FILE_LINES {
            long_files.push(rel.clone());
            if !KNOWN_LONG_FILES.contains(&rel.as_str()) {
                problems.push(format!(
                    "{rel}: {n} lines (at most {MAX_FILE_LINES}); split it"
                ));
            }
        }
        for (f, lines) in functions(code) {
            if lines > MAX_FN_LINES {
                long_fns.push((rel.clone(), f.clone()));
                if !KNOWN_LONG_FNS.contains(&(rel.as_str(), f.as_str())) {
                    problems.push(format!(
                        "{rel}: fn {f} has {lines} lines (at most {MAX_FN_LINES}); split it"
                    ));
                }
            }
        }
    }
    for known in KNOWN_LONG_FILES {
        if !long_files.iter().any(|f| f == known) {
            problems.push(format!(
                "{known} is short now: remove it from KNOWN_LONG_FILES"
            ));
        }
    }
    for (file, f) in KNOWN_LONG_FNS {
        if !long_fns.iter().any(|(a, b)| a == file && b == f) {
            problems.push(format!(
                "{file}: fn {f} is short now: remove it from KNOWN_LONG_FNS"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn function_lengths_are_measured_from_signature_to_closing_brace() {
    let code = "fn a() {\n    x();\n}\n\ntrait S {\n    fn d(\n        y: u8,\n    ) -> u8;\n}\n\nimpl T {\n    pub async fn b(\n        y: u8,\n    ) {\n        z();\n    }\n}\n";
    assert_eq!(
        functions(code),
        vec![("a".to_string(), 3), ("b".to_string(), 5)]
    );
}

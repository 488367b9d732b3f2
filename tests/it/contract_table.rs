//! docs/contract.md is complete and true: every command of README.md's
//! command table and every flag of every subcommand's `--help` has a row
//! there, and every test a row names exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("safepoint"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommand names of a `Commands:` section (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description is indented deeper than a command name.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags of an `Options:` section (without --help/--version).
fn flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .filter(|r| r.len() > 3 && r.as_bytes()[1] == b',')
                .map_or(l, |r| r[2..].trim_start());
            l.strip_prefix("--").map(|r| {
                r.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .next()
                    .unwrap_or("")
            })
        })
        .filter(|f| !f.is_empty() && *f != "help" && *f != "version")
        .map(|f| format!("--{f}"))
        .collect()
}

/// Every leaf command (`deploy start`, `backup`, ...) with its flags.
fn leaf_commands() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<Vec<String>> = subcommands(&help(&[]))
        .into_iter()
        .map(|c| vec![c])
        .collect();
    while let Some(path) = stack.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        let children = subcommands(&text);
        if children.is_empty() {
            out.insert(path.join(" "), flags(&text));
        } else {
            stack.extend(
                children
                    .into_iter()
                    .map(|c| [path.clone(), vec![c]].concat()),
            );
        }
    }
    out
}

/// Rows of the Markdown table under `heading`: cells, trimmed.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    doc.lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let mut cells = Vec::new();
            let mut cell = String::new();
            let mut chars = l.trim().trim_matches('|').chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'|') => cell.push(chars.next().unwrap()),
                    '|' => cells.push(std::mem::take(&mut cell).trim().to_string()),
                    c => cell.push(c),
                }
            }
            cells.push(cell.trim().to_string());
            cells
        })
        .collect()
}

/// The `code` spans of a cell.
fn spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The command words of a README command cell: `pin ID [--reason R]` → `pin`,
/// `wal-fetch --recovery FILE` → `wal-fetch`.
fn command_key(span: &str) -> String {
    span.split_whitespace()
        .take_while(|w| {
            !w.starts_with('-') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Panics unless `reference` (`module::test` or `src/x.rs::test`) names a
/// test function that exists.
fn assert_test_exists(reference: &str) {
    let (file, name) = reference
        .rsplit_once("::")
        .unwrap_or_else(|| panic!("`{reference}` is not module::test"));
    let path = if file.ends_with(".rs") {
        root().join(file)
    } else {
        root().join("tests/it").join(format!("{file}.rs"))
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "docs/contract.md names {reference}, but {} does not exist",
            path.display()
        )
    });
    assert!(
        text.contains(&format!("fn {name}(")),
        "docs/contract.md names {reference}, but {} has no fn {name}",
        path.display()
    );
    if file != "src/report.rs" && !file.ends_with(".rs") {
        let main = std::fs::read_to_string(root().join("tests/it/main.rs")).unwrap();
        assert!(
            main.contains(&format!("mod {file};")),
            "tests/it/{file}.rs is not in main.rs"
        );
    }
}

/// Promises known to have no working test yet, each named in docs/contract.md
/// with the reason. This list may only shrink.
const KNOWN_GAPS: &[&str] = &[];

fn tests_of(cell: &str, what: &str) -> Vec<String> {
    if KNOWN_GAPS.contains(&what) && cell.contains("known gap") {
        return Vec::new();
    }
    let tests: Vec<String> = spans(cell)
        .into_iter()
        .filter(|s| s.contains("::"))
        .collect();
    assert!(!tests.is_empty(), "docs/contract.md: {what} names no test");
    for t in &tests {
        assert_test_exists(t);
    }
    tests
}

#[test]
fn every_readme_command_and_every_help_flag_has_a_test_in_docs_contract_md() {
    let contract = std::fs::read_to_string(root().join("docs/contract.md")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();

    // README.md's command table.
    let commands: BTreeMap<String, String> = table(&contract, "## Commands (README.md)")
        .into_iter()
        .map(|r| (spans(&r[0]).concat(), r[2].clone()))
        .collect();
    let readme_rows = table(&readme, "## Commands");
    assert!(
        readme_rows.len() >= 15,
        "README command table: {readme_rows:?}"
    );
    for row in &readme_rows {
        for span in spans(&row[0]) {
            let key = command_key(&span);
            let cell = commands
                .get(&key)
                .unwrap_or_else(|| panic!("README command `{key}` has no row in docs/contract.md"));
            tests_of(cell, &key);
        }
    }

    // Every flag of every subcommand's --help.
    let flag_rows: BTreeMap<(String, String), String> =
        table(&contract, "## Flags (`--help` of every subcommand)")
            .into_iter()
            .map(|r| ((r[0].clone(), spans(&r[1]).concat()), r[2].clone()))
            .collect();
    let global = flags(&help(&[]));
    let leaves = leaf_commands();
    assert!(
        leaves.contains_key("deploy start") && leaves.contains_key("daemon"),
        "{leaves:?}"
    );
    let mut missing = Vec::new();
    let mut check =
        |command: &str, flag: &str| match flag_rows.get(&(command.to_string(), flag.to_string())) {
            Some(cell) => {
                tests_of(cell, &format!("{command} {flag}"));
            }
            None => missing.push(format!("| {command} | `{flag}` | |")),
        };
    for flag in &global {
        check("(global)", flag);
    }
    for (command, own) in &leaves {
        assert!(global.is_subset(own), "{command} lacks a global flag");
        for flag in own.difference(&global) {
            check(command, flag);
        }
    }
    assert!(
        missing.is_empty(),
        "flags in --help without a row in docs/contract.md:\n{}",
        missing.join("\n")
    );

    // And every other row names tests that exist.
    for row in table(&contract, "## Behaviours described elsewhere in the docs") {
        tests_of(&row[1], &row[0]);
    }
}

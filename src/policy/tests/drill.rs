//! A policy's `drill`: the scratch target, command restores, expectations.

use super::*;

#[test]
fn drill_target_equal_to_the_source_is_rejected() {
    let diags = problems(&policy_with(|p| {
        p.replace(
            "postgres://drill@scratch.internal:5432/postgres",
            "postgresql://drill@DB.internal/orders",
        )
    }));
    only(&diags, ORDERS, 32, "drill target is the source database");
}

#[test]
fn drill_target_path_inside_the_source_is_rejected() {
    let mut files = base();
    files.push(file(
        "f.yaml",
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: files}\nspec:\n\
         \x20 source: {type: directory, path: /srv/files/}\n  storage: primary\n\
         \x20 drill:\n    target: {type: directory, path: /srv/files/./drills}\n",
    ));
    let diags = problems(&files);
    only(&diags, "f.yaml", 8, "drill target is the source path");
}

#[test]
fn drill_target_type_must_fit_the_source() {
    let diags = problems(&policy_with(|p| {
        p.replace("type: postgres\n", "type: mysql\n")
            .replace("postgres://drill@scratch", "mysql://drill@scratch")
    }));
    let d = only(
        &diags,
        ORDERS,
        31,
        "a `mysql` drill target cannot restore a `postgres` source",
    );
    assert_eq!(d.hint.as_deref(), Some("use `type: postgres`"));
}

#[test]
fn drill_of_a_command_source_needs_a_restore_command() {
    let mut files = base();
    files.push(file(
        "c.yaml",
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: cmd}\nspec:\n\
         \x20 source: {type: command, backupCommand: \"etcdctl snapshot save /dev/stdout\"}\n\
         \x20 storage: primary\n  drill:\n    target: {type: directory, path: /tmp/drills}\n",
    ));
    let diags = problems(&files);
    only(
        &diags,
        "c.yaml",
        7,
        "a drill of a `command` source needs `source.restoreCommand`",
    );
}

#[test]
fn drill_expectations_use_the_grammar_drills_evaluate() {
    // Everything evaluation understands passes validation...
    for expect in ["!= 0", "= 1.5", "<= -2", "~ ^[a-z]+$", "non-empty"] {
        let files = policy_with(|p| p.replace(r#"expect: ">= 1""#, &format!("expect: {expect:?}")));
        assert!(load(&files).is_ok(), "{expect}");
    }
    // ...and everything it would reject is reported at file:line, a regex
    // that does not compile included.
    for (expect, part) in [
        ("~ (unclosed", "invalid regex"),
        ("~", "regex after `~` is empty"),
        (">= many", "is not a number"),
        ("at least one", "unknown expectation"),
    ] {
        let diags = problems(&policy_with(|p| {
            p.replace(r#"expect: ">= 1""#, &format!("expect: {expect:?}"))
        }));
        let d = only(&diags, ORDERS, 38, part);
        assert!(d.message.starts_with("invalid expectation"), "{d}");
    }
}

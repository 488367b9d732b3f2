//! The shape of files and documents: YAML syntax, the schema (and the
//! generated schema file), names, duplicates, and how diagnostics read.

use super::*;

#[test]
fn multi_document_file_reports_lines_within_the_whole_file() {
    let text = format!(
        "{STORAGE}---\n{NOTIFIER}---\n{}",
        POLICY.replace("keepDaily", "keepDialy")
    );
    let diags = problems(&[file("all.yaml", &text)]);
    // 9 storage lines + `---` + 11 notifier lines + `---` + line 23 of the policy.
    only(&diags, "all.yaml", 22 + 23, "unknown field `keepDialy`");
}

#[test]
fn unknown_field_gets_did_you_mean_hint() {
    let diags = problems(&policy_with(|p| p.replace("keepDaily", "keepDialy")));
    let d = only(
        &diags,
        ORDERS,
        23,
        "unknown field `keepDialy` in `spec.retention`",
    );
    assert_eq!(d.column, 5);
    assert_eq!(d.hint.as_deref(), Some("did you mean `keepDaily`?"));
}

#[test]
fn unknown_field_without_close_match_lists_the_allowed_fields() {
    let diags = problems(&policy_with(|p| {
        p.replace("  suspend: false", "  colour: red")
    }));
    let d = only(&diags, ORDERS, 41, "unknown field `colour` in `spec`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("allowed fields here: alerts, deploy")),
        "{d}"
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let diags = problems(&policy_with(|p| {
        p.replace("keepLast: 3", "keepLast: three")
    }));
    only(
        &diags,
        ORDERS,
        21,
        "`spec.retention.keepLast` must be a whole number",
    );
}

#[test]
fn missing_required_field_is_reported_at_its_parent() {
    let diags = problems(&policy_with(|p| p.replace("  storage: primary", "")));
    let d = only(&diags, ORDERS, 6, "missing field `storage` in `spec`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("add `storage:`"))
    );
}

#[test]
fn wrong_api_version_is_reported() {
    let diags = problems(&policy_with(|p| p.replace("safepoint/v1", "safepoint/v2")));
    let d = only(&diags, ORDERS, 1, "unsupported apiVersion `safepoint/v2`");
    assert_eq!(d.hint.as_deref(), Some("set `apiVersion: safepoint/v1`"));
}

#[test]
fn unknown_kind_is_reported() {
    let diags = problems(&policy_with(|p| {
        p.replace("kind: BackupPolicy", "kind: BackupPolcy")
    }));
    let d = only(&diags, ORDERS, 2, "unknown kind `BackupPolcy`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `BackupPolicy`?"));
}

#[test]
fn name_must_be_a_dns_label() {
    let diags = problems(&policy_with(|p| {
        p.replace("name: orders-db", "name: Orders_DB")
    }));
    only(
        &diags,
        ORDERS,
        4,
        "invalid name `Orders_DB`: not a DNS label",
    );
}

#[test]
fn duplicate_name_points_at_the_second_and_mentions_the_first() {
    let mut files = policy_with(|p| p.to_owned());
    files.push(file("policies/z.yaml", POLICY));
    let diags = problems(&files);
    let d = only(
        &diags,
        "policies/z.yaml",
        4,
        "duplicate BackupPolicy name `orders-db`",
    );
    assert!(
        d.message
            .contains("first defined at policies/orders.yaml:4"),
        "{d}"
    );
}

#[test]
fn yaml_syntax_error_reports_its_line_and_other_files_still_validate() {
    let mut files = policy_with(|p| p.replace("keepDaily", "keepDialy"));
    files.push(file(
        "policies/broken.yaml",
        "apiVersion: safepoint/v1\nkind: [Storage\nmetadata: {}\n",
    ));
    let diags = problems(&files);
    assert_eq!(diags.len(), 2, "{}", render(&diags));
    assert_eq!(
        (diags[0].file.as_str(), diags[0].line),
        ("policies/broken.yaml", 3)
    );
    assert!(
        diags[0].message.starts_with("yaml syntax error"),
        "{}",
        diags[0]
    );
    assert_eq!((diags[1].file.as_str(), diags[1].line), (ORDERS, 23));
}

#[test]
fn duplicate_yaml_key_is_reported() {
    let diags = problems(&policy_with(|p| {
        p.replace("  suspend: false", "  suspend: false\n  rpo: 1h")
    }));
    only(&diags, ORDERS, 42, "duplicate key `rpo` (first at line 13)");
}

#[test]
fn one_file_with_many_problems_reports_all_of_them_at_once() {
    let broken = POLICY
        .replace("name: orders-db", "name: Orders")
        .replace("backup@db", "backup:pw@db")
        .replace("storage: primary", "storage: nowhere")
        .replace("0 */6 * * *", "every six hours")
        .replace("rpo: 6h", "rpo: 6")
        .replace("keepDaily", "keepDialy")
        .replace(
            "onFailure: [pin-pre-deploy,",
            "onFailure: [pin-pre-deploy, rollback,",
        )
        .replace(
            "postgres://drill@scratch.internal:5432/postgres",
            "postgres://backup@db.internal/orders",
        )
        .replace("notifiers: [oncall]", "notifiers: [pager]");
    let mut files = base();
    files.push(file(ORDERS, &broken));
    let diags = problems(&files);
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert_eq!(
        lines,
        [4, 9, 11, 12, 13, 19, 23, 32, 40],
        "{}",
        render(&diags)
    );
}

#[test]
fn diagnostics_display_as_file_line_column_message_hint() {
    let diags = problems(&policy_with(|p| p.replace("keepDaily", "keepDialy")));
    assert_eq!(
        diags[0].to_string(),
        "policies/orders.yaml:23:5: unknown field `keepDialy` in `spec.retention` \
         (hint: did you mean `keepDaily`?)"
    );
}

#[test]
fn document_shape_problems_are_reported_not_panicked_on() {
    let cases = [
        ("- a\n- b\n", 1, "the document must be a mapping"),
        (
            "apiVersion: safepoint/v1\nmetadata: {name: a}\n",
            1,
            "missing field `kind`",
        ),
        (
            "apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: a}\nspec:\n",
            4,
            "`spec` must be a mapping, found nothing",
        ),
        ("a: &x [*x]\n", 1, "unknown anchor"),
        ("kind: !custom Storage\n", 1, "unsupported yaml tag"),
    ];
    for (text, line, part) in cases {
        let diags = problems(&[file("x.yaml", text)]);
        assert_eq!(diags[0].line, line, "{}", render(&diags));
        assert!(diags[0].message.contains(part), "{}", render(&diags));
    }
}

#[test]
fn a_file_that_is_not_utf8_is_one_diagnostic_and_the_others_are_still_checked() {
    let mut files = policy_with(|p| p.replace("keepDaily", "keepDialy"));
    let mut latin1 = b"apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: caf".to_vec();
    latin1.extend_from_slice(b"\xe9}\nspec: {type: local, path: /x}\n");
    files.push(PolicyFile::from_bytes("policies/latin1.yaml", latin1));
    let diags = problems(&files);
    assert_eq!(diags.len(), 2, "{}", render(&diags));
    let bad = diags
        .iter()
        .find(|d| d.file == "policies/latin1.yaml")
        .unwrap();
    assert_eq!((bad.line, bad.column), (3, 21), "{bad}");
    assert!(
        bad.message.contains("not UTF-8") && bad.message.contains("0xe9"),
        "{bad}"
    );
    assert!(
        diags
            .iter()
            .any(|d| d.file == ORDERS && d.message.contains("keepDialy"))
    );
}

#[test]
fn schema_file_is_up_to_date() {
    // Compared at compile time (no IO in the comparison); rewritten only on request.
    let committed = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.json"));
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&json_schema()).unwrap_or_default()
    );
    if option_env!("UPDATE_SCHEMA").is_some() || std::env::var_os("UPDATE_SCHEMA").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.json");
        std::fs::write(path, &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "policies/schema.json is out of date with the raw policy types in src/policy/raw.rs; \
         regenerate it with `UPDATE_SCHEMA=1 cargo test --lib policy::tests::documents::schema_file_is_up_to_date` \
         and commit the result"
    );
}

//! A policy's `source`: fields per source type, `binDir`, `pitr`.

use chrono::TimeDelta;

use super::*;

#[test]
fn source_fields_are_required_per_type() {
    let diags = problems(&policy_with(|p| {
        p.replace("    url: postgres://backup@db.internal:5432/orders\n", "")
    }));
    let d = only(&diags, ORDERS, 7, "a `postgres` source needs `url`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("add `url: postgres://"))
    );
    let diags = problems(&policy_with(|p| {
        p.replace("type: postgres                    #", "type: command #")
            .replace("url: postgres://backup@db.internal:5432/orders", "restoreCommand: cat")
            .replace("    passwordFrom: {env: ORDERS_DB_PASSWORD}   # or {file: /run/secrets/orders}\n", "")
            .replace("      completeness: exact ", "      completeness: off ")
            .replace("type: postgres\n", "type: directory\n")
            .replace("url: postgres://drill@scratch.internal:5432/postgres", "path: /tmp/d")
            .replace(
                "      checks:\n        - name: users exist\n          sql: \"select count(*) from users\"\n          expect: \">= 1\"\n",
                "",
            )
    }));
    only(
        &diags,
        ORDERS,
        7,
        "a `command` source needs `backupCommand`",
    );
}

#[test]
fn source_field_that_does_not_apply_is_an_error() {
    let diags = problems(&policy_with(|p| {
        p.replace(
            "passwordFrom: {env: ORDERS_DB_PASSWORD}",
            "path: /var/lib/x",
        )
    }));
    let d = only(
        &diags,
        ORDERS,
        10,
        "`path` does not apply to a `postgres` source",
    );
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("`url`, `passwordFrom`, `binDir` and `pitr`"))
    );
}

#[test]
fn bin_dir_is_a_postgres_source_field() {
    let files = policy_with(|p| {
        p.replace(
            "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
            "    passwordFrom: {env: ORDERS_DB_PASSWORD}\n    binDir: /usr/lib/postgresql/17/bin",
        )
    });
    let state = load(&files).unwrap_or_else(|d| panic!("{}", render(&d)));
    match &state.policies["orders-db"].source {
        Source::Postgres { bin_dir, .. } => {
            assert_eq!(
                bin_dir.as_deref(),
                Some(std::path::Path::new("/usr/lib/postgresql/17/bin"))
            )
        }
        other => panic!("{other:?}"),
    }
    let files = policy_with(|p| {
        p.replace("type: postgres                    #", "type: mysql #")
            .replace(
                "postgres://backup@db.internal:5432/orders",
                "mysql://backup@db:3306/orders",
            )
            .replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                "    binDir: /opt/bin",
            )
    });
    let diags = problems(&files);
    assert!(
        diags.iter().any(|d| d.message.contains("binDir")),
        "{}",
        render(&diags)
    );
}

#[test]
fn pitr_is_a_postgres_source_block_with_defaults_and_checked_fields() {
    // The example without its drill (not for PITR policies yet), with `block`.
    let with_drill = |block: &'static str| {
        policy_with(move |p| {
            p.replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                &format!("    passwordFrom: {{env: ORDERS_DB_PASSWORD}}\n{block}"),
            )
        })
    };
    let with = |block: &'static str| {
        policy_with(move |p| {
            let start = p.find("  drill:").unwrap();
            let end = p.find("  alerts:").unwrap();
            format!("{}{}", &p[..start], &p[end..]).replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                &format!("    passwordFrom: {{env: ORDERS_DB_PASSWORD}}\n{block}"),
            )
        })
    };
    let state = load(&with("    pitr: {}")).unwrap_or_else(|d| panic!("{}", render(&d)));
    let pitr = state.policies["orders-db"].source.pitr().cloned();
    assert_eq!(
        pitr,
        Some(Pitr {
            wal_flush_interval: TimeDelta::seconds(10),
            slot: "safepoint_orders_db".into(),
        })
    );
    let state = load(&with("    pitr: {walFlushInterval: 2s, slot: orders_wal}"))
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    let pitr = state.policies["orders-db"].source.pitr().cloned();
    assert_eq!(
        pitr.map(|p| (p.wal_flush_interval, p.slot)),
        Some((TimeDelta::seconds(2), "orders_wal".into()))
    );
    let diags = problems(&with(
        "    pitr: {walFlushInterval: soon, slot: Orders-WAL}",
    ));
    let at = |needle: &str| {
        diags
            .iter()
            .find(|d| d.message.contains(needle))
            .map(|d| (d.file.clone(), d.line))
    };
    assert_eq!(
        at("invalid replication slot"),
        Some((ORDERS.to_string(), 11)),
        "{}",
        render(&diags)
    );
    assert_eq!(
        at("walFlushInterval"),
        Some((ORDERS.to_string(), 11)),
        "{}",
        render(&diags)
    );
    let diags = problems(&with("    pitr: {walFlushInterval: 2h}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("longer than an hour")),
        "{}",
        render(&diags)
    );
    // The example policy's drill has a target: a PITR drill takes none.
    let diags = problems(&with_drill("    pitr: {}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("it takes no `target`")),
        "{}",
        render(&diags)
    );
    let diags = problems(&with("    pitr: {walFlushInterval: 2h}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("longer than an hour")),
        "{}",
        render(&diags)
    );
    let diags = problems(&policy_with(|p| {
        p.replace("type: postgres                    #", "type: mysql #")
            .replace(
                "postgres://backup@db.internal:5432/orders",
                "mysql://backup@db:3306/orders",
            )
            .replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                "    pitr: {}",
            )
    }));
    assert!(
        diags.iter().any(|d| d.message.contains("pitr")),
        "{}",
        render(&diags)
    );
}

//! Secrets written inline are found wherever they are written.

use super::*;

#[test]
fn password_in_a_url_is_an_inline_secret() {
    let diags = problems(&policy_with(|p| {
        p.replace("backup@db", "backup:hunter2@db")
    }));
    let d = only(
        &diags,
        ORDERS,
        9,
        "a password is written inline in a URL (`spec.source.url`)",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("remove the password from the URL and use passwordFrom: {env: NAME} or {file: PATH}")
    );
    assert!(!d.to_string().contains("hunter2"));
}

#[test]
fn secret_query_parameter_in_a_url_is_an_inline_secret() {
    let mut files = base();
    files[1] = file(
        "n.yaml",
        &NOTIFIER.replace("/safepoint", "/safepoint?token=abc123"),
    );
    let diags = problems(&files);
    only(
        &diags,
        "n.yaml",
        10,
        "URL query parameter `token` holds a secret",
    );
}

#[test]
fn age_secret_key_as_recipient_is_an_inline_secret() {
    let mut files = base();
    files[0] = file("s.yaml", &STORAGE.replace("age1ql3", "AGE-SECRET-KEY-1QQ"));
    let diags = problems(&files);
    only(
        &diags,
        "s.yaml",
        9,
        "an age secret key (identity) is written inline",
    );
}

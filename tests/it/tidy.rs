//! Architecture tidiness: the pure modules decide without touching the world.

const PURE: &[&str] = &[
    "src/policy",
    "src/plan",
    "src/status.rs",
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
        // Unit tests at the end of a file may do IO (e.g. read fixtures).
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("tests.rs"))
        {
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

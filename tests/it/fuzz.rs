//! Fuzzing on stable Rust. Each target takes inputs derived from real ones
//! (the shipped policies, a permissions file, a manifest and a pin marker as
//! safepoint writes them, a signed webhook header, drill expectations) by
//! random byte-level mutations — flips, inserts of YAML/JSON tokens, deletes,
//! splices, truncations, repeats — and checks the target's contract: an
//! answer (a value, or an error that says why), never a panic.
//!
//! In the test suite every target runs a fixed number of cases with a fixed
//! seed (reproducible), and every file under `tests/fuzz/corpus/<target>/`
//! is replayed. `benches/fuzz/run.sh SECONDS` runs the targets for a set time
//! with fresh seeds (`SAFEPOINT_FUZZ_SECONDS`), prints how many inputs each
//! executed, and saves a failing input (shrunk by proptest) into the corpus,
//! where it stays as a regression test.
//!
//! `fuzz_api.rs` runs the same loop over HTTP against a real daemon (API
//! request bodies, the Git push webhook payload).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use safepoint::model::Expectation;
use safepoint::notify::payload;
use safepoint::policy::{self, PolicyFile};
use safepoint::storage::{manifest, pin};

use crate::common::PERMISSIVE;

/// Cases per target in the test suite (fixed seed).
const SUITE_CASES: u32 = 400;

/// Tokens that matter to YAML and JSON parsers, inserted at random offsets.
const TOKENS: &[&[u8]] = &[
    b":",
    b": ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"\n",
    b"\n  ",
    b"\t",
    b"\"",
    b"'",
    b"#",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!binary ",
    b"!tag ",
    b"~",
    b"null",
    b"true",
    b"---\n",
    b"...\n",
    b"|\n",
    b">-\n",
    b"?",
    b"%YAML 1.2\n",
    b"1e999",
    b"-0",
    b"99999999999999999999",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\0",
    b"\\u0000",
    b"\\ud800",
    b"../",
    b"/",
    b"..",
    b"0x10",
    b"2026-13-45T99:99:99Z",
    b"v1=",
    b"t=",
    b",v1=",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, token: usize },
    Delete { at: usize, len: usize },
    Repeat { at: usize, len: usize, times: usize },
    Truncate { at: usize },
    Splice { at: usize, from: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..32, 2usize..200).prop_map(|(at, len, times)| Mutation::Repeat {
            at,
            len,
            times
        }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<usize>(), 1usize..128)
            .prop_map(|(at, from, len)| Mutation::Splice { at, from, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        match *m {
            Mutation::Flip { at, bit } if n > 0 => bytes[at % n] ^= 1 << bit,
            Mutation::Flip { .. } => {}
            Mutation::Insert { at, token } => {
                let at = pos(at);
                bytes.splice(at..at, TOKENS[token].iter().copied());
            }
            Mutation::Delete { at, len } => {
                let at = pos(at);
                bytes.drain(at..(at + len).min(n));
            }
            Mutation::Repeat { at, len, times } => {
                let at = pos(at);
                let piece: Vec<u8> = bytes[at..(at + len).min(n)].to_vec();
                for _ in 0..times {
                    bytes.splice(at..at, piece.iter().copied());
                }
            }
            Mutation::Truncate { at } => bytes.truncate(pos(at)),
            Mutation::Splice { at, from, len } => {
                let from = pos(from);
                let piece: Vec<u8> = bytes[from..(from + len).min(n)].to_vec();
                let at = pos(at);
                bytes.splice(at..at, piece);
            }
        }
    }
    bytes
}

/// A seed input with up to 8 mutations applied.
fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 0..8),
    )
        .prop_map(|(seed, ms)| apply(seed, &ms))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir(target: &str) -> PathBuf {
    root().join("tests/fuzz/corpus").join(target)
}

/// One fuzz target: its name, seed inputs and the contract checked per input
/// (`Err` = a contract violation; a panic is one too).
struct Target {
    name: &'static str,
    seeds: fn() -> Vec<Vec<u8>>,
    check: fn(&[u8]) -> Result<(), String>,
}

fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "policy",
            seeds: policy_seeds,
            check: check_policy,
        },
        Target {
            name: "permissions",
            seeds: || vec![PERMISSIVE.as_bytes().to_vec(), PERMISSIONS_TEAMS.into()],
            check: check_permissions,
        },
        Target {
            name: "manifest",
            seeds: || vec![MANIFEST.as_bytes().to_vec()],
            check: check_manifest,
        },
        Target {
            name: "pin",
            seeds: || vec![PIN.as_bytes().to_vec()],
            check: check_pin,
        },
        Target {
            name: "webhook-signature",
            seeds: webhook_seeds,
            check: check_webhook_signature,
        },
        Target {
            name: "expectation",
            seeds: || {
                [
                    "> 0",
                    ">= 10",
                    "= 3",
                    "!= 0",
                    "<= 1.5",
                    "~ ^v[0-9]+$",
                    "non-empty",
                ]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect()
            },
            check: check_expectation,
        },
    ]
}

fn policy_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            seeds.push(std::fs::read(&path).unwrap());
        }
    }
    // Every kind in one multi-document file.
    let all = seeds.join(&b"\n---\n"[..]);
    seeds.push(all);
    seeds
}

/// Policies: a desired state or diagnostics that each name the file, never
/// a panic; the whole file is read once (no quadratic blow-up is checked by
/// the bench script's per-input maximum, not here).
fn check_policy(bytes: &[u8]) -> Result<(), String> {
    match policy::load(&[PolicyFile::from_bytes("fuzz.yaml", bytes.to_vec())]) {
        Ok(_) => Ok(()),
        Err(diags) if diags.is_empty() => Err("rejected with no diagnostic".into()),
        Err(diags) => match diags
            .iter()
            .find(|d| d.file != "fuzz.yaml" || d.message.is_empty())
        {
            Some(d) => Err(format!("diagnostic without file or message: {d:?}")),
            None => Ok(()),
        },
    }
}

const PERMISSIONS_TEAMS: &str = r#"apiVersion: safepoint/v1
kind: Permissions
grants:
  - name: payments
    match: {names: ["payments-*"]}
    sourceKinds: [postgres]
    hosts: ["db-*.internal:5432"]
    secrets: {env: ["PAYMENTS_*"]}
"#;

fn check_permissions(bytes: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(bytes);
    match policy::permissions::parse("perm.yaml", &text) {
        Ok(_) => Ok(()),
        Err(diags) if diags.is_empty() => Err("rejected with no diagnostic".into()),
        Err(_) => Ok(()),
    }
}

const MANIFEST: &str = r#"{
  "format": 1,
  "id": "20261129T101500Z-1a2b",
  "policy": "orders",
  "storage": "local",
  "sourceKind": "postgres",
  "trigger": "schedule",
  "release": null,
  "commit": "0123456789abcdef",
  "requestedBy": null,
  "startedAt": "2026-11-29T10:15:00Z",
  "finishedAt": "2026-11-29T10:15:09Z",
  "artifact": {
    "file": "data.pgdump.zst",
    "size": 1234,
    "rawSize": 5678,
    "checksum": "blake3:00",
    "compression": "zstd",
    "encryption": null
  },
  "tools": {"pg_dump": "15.8"},
  "counts": {"public.orders": 42},
  "status": "complete"
}"#;

/// A manifest read from storage is accepted only if it names its own backup
/// and a plain artifact file (nothing outside the backup's directory).
fn check_manifest(bytes: &[u8]) -> Result<(), String> {
    match manifest::parse(bytes, "orders", "20261129T101500Z-1a2b") {
        Ok(m) => {
            let f = &m.artifact.file;
            if m.policy != "orders" || m.id != "20261129T101500Z-1a2b" {
                return Err(format!("accepted a manifest of {}/{}", m.policy, m.id));
            }
            if f.is_empty() || f == ".." || f.contains('/') || f.contains('\\') {
                return Err(format!("accepted artifact path {f:?}"));
            }
            if m.status != "complete" {
                return Err(format!("accepted status {:?}", m.status));
            }
            Ok(())
        }
        Err(reason) if reason.is_empty() => Err("refused without a reason".into()),
        Err(_) => Ok(()),
    }
}

const PIN: &str = r#"{"format":1,"policy":"orders","id":"20261129T101500Z-1a2b","reason":"legal hold","pinnedBy":"alice","pinnedAt":"2026-11-29T10:20:00Z"}"#;

fn check_pin(bytes: &[u8]) -> Result<(), String> {
    match pin::parse_marker(bytes, "orders", "20261129T101500Z-1a2b") {
        Ok(m) if m.policy != "orders" || m.id != "20261129T101500Z-1a2b" => {
            Err(format!("accepted the marker of {}/{}", m.policy, m.id))
        }
        Ok(_) => Ok(()),
        Err(reason) if reason.is_empty() => Err("refused without a reason".into()),
        Err(_) => Ok(()),
    }
}

const SECRET: &[u8] = b"fuzz-secret";
const BODY: &[u8] = br#"{"event":"alert","policy":"orders"}"#;

fn fixed_now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap()
}

/// A signature header as the notifier sends it.
fn webhook_seeds() -> Vec<Vec<u8>> {
    vec![payload::sign(SECRET, BODY, fixed_now()).into_bytes()]
}

/// A mutated signature header never verifies unless it still carries the
/// one valid signature for this body and time; never a panic.
fn check_webhook_signature(bytes: &[u8]) -> Result<(), String> {
    let header = String::from_utf8_lossy(bytes);
    let valid = payload::sign(SECRET, BODY, fixed_now());
    let v1 = valid.split("v1=").nth(1).unwrap_or_default().to_string();
    match payload::verify(SECRET, &header, BODY, fixed_now()) {
        // Hex is read case-insensitively: `A` and `a` are the same signature.
        Ok(()) if !header.to_ascii_lowercase().contains(&v1) => {
            Err(format!("verified a forged header {header:?}"))
        }
        _ => Ok(()),
    }
}

fn check_expectation(bytes: &[u8]) -> Result<(), String> {
    let _ = Expectation::parse(&String::from_utf8_lossy(bytes));
    Ok(())
}

/// Runs the target `name` for `cases` inputs mutated from `seeds`, from
/// `seed` (or a random seed), saving a failing input into the corpus.
/// Returns the number of inputs executed.
fn run(
    name: &str,
    seeds: Vec<Vec<u8>>,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
    cases: u32,
    seed: Option<u64>,
) -> Result<u64, String> {
    let config = Config {
        cases,
        failure_persistence: None,
        rng_seed: seed.map_or(RngSeed::Random, RngSeed::Fixed),
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let executed = std::cell::Cell::new(0u64);
    let result = runner.run(&inputs(seeds), |input| {
        executed.set(executed.get() + 1);
        check(&input).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(executed.get()),
        Err(TestError::Fail(why, input)) => {
            let dir = corpus_dir(name);
            std::fs::create_dir_all(&dir).unwrap();
            let file = format!("crash-{}", blake3::hash(&input).to_hex());
            std::fs::write(dir.join(&file), &input).unwrap();
            Err(format!(
                "fuzz target `{name}`: {why}; input saved as tests/fuzz/corpus/{name}/{file} \
                 (it is replayed by the test suite from now on)"
            ))
        }
        Err(TestError::Abort(why)) => Err(format!("fuzz target `{name}` aborted: {why}")),
    }
}

/// Whether `SAFEPOINT_FUZZ_TARGET` (benches/fuzz/run.sh's second argument)
/// leaves the target `name` in.
pub(crate) fn selected(name: &str) -> bool {
    std::env::var("SAFEPOINT_FUZZ_TARGET")
        .ok()
        .is_none_or(|only| only == name)
}

/// Every input saved under `tests/fuzz/corpus/<name>/`, checked (a panic or
/// an `Err` fails the test).
pub(crate) fn replay_corpus(name: &str, check: &dyn Fn(&[u8]) -> Result<(), String>) {
    let Ok(entries) = std::fs::read_dir(corpus_dir(name)) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Err(why) = check(&bytes) {
            panic!("{}: {why}", path.display());
        }
    }
}

/// The target `name` over `suite_cases` inputs from a fixed seed; with
/// `SAFEPOINT_FUZZ_SECONDS` (benches/fuzz/run.sh), for that long with fresh
/// seeds in batches of `batch` inputs, printing the inputs executed.
pub(crate) fn fuzz_target(
    name: &str,
    seeds: &dyn Fn() -> Vec<Vec<u8>>,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
    suite_cases: u32,
    batch: u32,
) {
    let seconds: Option<u64> = std::env::var("SAFEPOINT_FUZZ_SECONDS").ok().map(|s| {
        s.parse()
            .expect("SAFEPOINT_FUZZ_SECONDS is a number of seconds")
    });
    let Some(seconds) = seconds else {
        run(name, seeds(), check, suite_cases, Some(0x5afe_9017)).unwrap_or_else(|e| panic!("{e}"));
        return;
    };
    let (started, mut executed, mut slowest) = (Instant::now(), 0u64, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(seconds) {
        let at = Instant::now();
        executed += run(name, seeds(), check, batch, None).unwrap_or_else(|e| panic!("{e}"));
        slowest = slowest.max(at.elapsed() / batch);
    }
    println!(
        "fuzz {name}: {executed} inputs in {:.0} s (mean per input over the slowest batch: {:?})",
        started.elapsed().as_secs_f64(),
        slowest
    );
}

/// The seeds are inputs the targets accept: mutations start from the valid
/// path, not only from errors.
#[test]
fn fuzz_seeds_are_accepted_inputs() {
    // The last seed holds every shipped document (a policy alone names a
    // storage declared in another file).
    let all = policy_seeds().pop().unwrap();
    let loaded = policy::load(&[PolicyFile::from_bytes("seed.yaml", all)]);
    assert!(loaded.is_ok(), "{loaded:?}");
    for seed in [PERMISSIVE, PERMISSIONS_TEAMS] {
        policy::permissions::parse("perm.yaml", seed).unwrap();
    }
    manifest::parse(MANIFEST.as_bytes(), "orders", "20261129T101500Z-1a2b").unwrap();
    pin::parse_marker(PIN.as_bytes(), "orders", "20261129T101500Z-1a2b").unwrap();
    let header = String::from_utf8(webhook_seeds().remove(0)).unwrap();
    payload::verify(SECRET, &header, BODY, fixed_now()).unwrap();
    for seed in [
        "> 0",
        ">= 10",
        "= 3",
        "!= 0",
        "<= 1.5",
        "~ ^v[0-9]+$",
        "non-empty",
    ] {
        Expectation::parse(seed).unwrap();
    }
}

/// Every saved input of every target, replayed (a panic fails the test).
#[test]
fn fuzz_corpus_inputs_keep_their_contract() {
    for target in targets() {
        replay_corpus(target.name, &target.check);
    }
}

/// Each target over `SUITE_CASES` inputs from a fixed seed; with
/// `SAFEPOINT_FUZZ_SECONDS` (benches/fuzz/run.sh), each target for that long
/// with fresh seeds, printing executions per target.
#[test]
fn fuzz_targets_answer_every_mutated_input_without_panicking() {
    for target in targets().into_iter().filter(|t| selected(t.name)) {
        fuzz_target(
            target.name,
            &target.seeds,
            &target.check,
            SUITE_CASES,
            2_000,
        );
    }
}

/// Structure that mutation rarely reaches: deep nesting and alias bombs give
/// diagnostics, not a stack overflow or unbounded memory.
#[test]
fn deeply_nested_and_alias_bomb_policies_are_diagnostics() {
    for depth in [1_000usize, 100_000] {
        let flow = "[".repeat(depth);
        let block: String = (0..depth.min(5_000))
            .map(|i| format!("{}- \n", " ".repeat(i)))
            .collect();
        for text in [flow, block] {
            check_policy(text.as_bytes()).unwrap();
        }
    }
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        bomb.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    check_policy(bomb.as_bytes()).unwrap();
}
